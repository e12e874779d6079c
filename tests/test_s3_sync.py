"""S3 sync against a real S3-protocol HTTP server (moto) on 127.0.0.1, with the aws CLI as an
independent client."""
import os
import shutil
import subprocess
import time

import boto3
import pytest

import fetch_arxiv
import s3sync
import store as st
from conftest import free_port, wait_for_port

SAMPLE = ["--dataset_path", str(st.SAMPLE_CORPUS), "--max_examples_per_split", "11"]


def _bucket(s3_env, name):
    c = boto3.client("s3", endpoint_url=s3_env)
    c.create_bucket(Bucket=name)
    return c


def _objects(c, bucket, prefix=""):
    resp = c.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o for o in resp.get("Contents", [])}


def test_upload_visible_to_aws_cli_download_identical(tmp_path, s3_env, capsys):
    _bucket(s3_env, "upload-bucket")
    local = tmp_path / "local"
    meta = fetch_arxiv.main(SAMPLE + ["--output_dir", str(local), "--upload_to_s3", "--s3_bucket", "upload-bucket"])
    out = capsys.readouterr().out
    prefix = f"arxiv-ergodic-scaling/path__sample_corpus/{meta['variant_id']}"
    assert f"s3://upload-bucket/{prefix}: uploaded 3 data file(s)" in out
    # credentials never appear in output
    assert "testing-secret-key-value" not in out and "testing-key-id" not in out
    # an independent client sees the four files with the right sizes
    aws = shutil.which("aws")
    assert aws, "the aws CLI (awscli in requirements.txt) is needed"
    ls = subprocess.run([aws, "s3", "ls", f"s3://upload-bucket/{prefix}/", "--endpoint-url", s3_env],
                        capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert ls.returncode == 0, ls.stderr
    listed = {line.split()[-1]: int(line.split()[-2]) for line in ls.stdout.splitlines()}
    assert listed == {**{n: meta["files"][n]["bytes"] for n in st.DATA_FILES},
                      "meta.json": (local / "meta.json").stat().st_size}
    # a second machine downloads instead of building: the source is not touched (bogus path proves it)
    fresh = tmp_path / "fresh"
    meta2 = fetch_arxiv.main(["--dataset_path", str(st.SAMPLE_CORPUS), "--max_examples_per_split", "11",
                              "--output_dir", str(fresh), "--download_from_s3", "--s3_bucket", "upload-bucket"])
    assert "downloaded and verified" in capsys.readouterr().out
    assert meta2["store_id"] == meta["store_id"]
    for n in st.DATA_FILES + ("meta.json",):
        assert (fresh / n).read_bytes() == (local / n).read_bytes()
    st.Store(fresh, verify=True)


def test_identical_reupload_sends_nothing(tmp_path, s3_env, capsys):
    c = _bucket(s3_env, "again")
    local = tmp_path / "local"
    fetch_arxiv.main(SAMPLE + ["--output_dir", str(local), "--upload_to_s3", "--s3_bucket", "again",
                               "--s3_prefix", "p"])
    before = {k: (o["LastModified"], o["ETag"]) for k, o in _objects(c, "again").items()}
    assert set(before) == {"p/tokens.bin", "p/index.jsonl", "p/splits.json", "p/meta.json"}
    time.sleep(1.1)  # LastModified has one-second resolution
    capsys.readouterr()
    sent = s3sync.upload_store(local, "again", "p", s3sync.s3_client())
    assert sent == 0
    assert "nothing uploaded" in capsys.readouterr().out
    after = {k: (o["LastModified"], o["ETag"]) for k, o in _objects(c, "again").items()}
    assert after == before


def test_corrupted_remote_file_detected(tmp_path, s3_env, capsys):
    c = _bucket(s3_env, "corrupt")
    local = tmp_path / "local"
    fetch_arxiv.main(SAMPLE + ["--output_dir", str(local), "--upload_to_s3", "--s3_bucket", "corrupt",
                               "--s3_prefix", "x"])
    body = bytearray(c.get_object(Bucket="corrupt", Key="x/index.jsonl")["Body"].read())
    body[5] = ord("Z") if body[5] != ord("Z") else ord("Y")
    c.put_object(Bucket="corrupt", Key="x/index.jsonl", Body=bytes(body))
    dest = tmp_path / "dest"
    with pytest.raises(SystemExit) as e:
        fetch_arxiv.main(SAMPLE + ["--output_dir", str(dest), "--download_from_s3", "--s3_bucket", "corrupt",
                                   "--s3_prefix", "x"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "s3://corrupt/x/index.jsonl: sha256" in err and "corrupt" in err
    assert not dest.exists()  # nothing half-written put in place
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_wrong_variant_refused(tmp_path, s3_env, capsys):
    _bucket(s3_env, "variant")
    fetch_arxiv.main(SAMPLE + ["--output_dir", str(tmp_path / "a"), "--upload_to_s3", "--s3_bucket", "variant",
                               "--s3_prefix", "shared"])
    other = ["--dataset_path", str(st.SAMPLE_CORPUS), "--max_examples_per_split", "20"]
    with pytest.raises(SystemExit):  # download of another variant
        fetch_arxiv.main(other + ["--output_dir", str(tmp_path / "b"), "--download_from_s3",
                                  "--s3_bucket", "variant", "--s3_prefix", "shared"])
    assert "another variant" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit):  # upload over another variant
        fetch_arxiv.main(other + ["--output_dir", str(tmp_path / "c"), "--upload_to_s3",
                                  "--s3_bucket", "variant", "--s3_prefix", "shared"])
    assert "refusing to overwrite" in capsys.readouterr().err
    st.Store(tmp_path / "c", verify=True)  # the local build stays


def test_download_with_no_remote_builds_locally(tmp_path, s3_env, capsys):
    _bucket(s3_env, "empty")
    meta = fetch_arxiv.main(SAMPLE + ["--output_dir", str(tmp_path / "s"), "--download_from_s3",
                                      "--s3_bucket", "empty"])
    assert "no complete store there" in capsys.readouterr().out
    assert st.Store(tmp_path / "s", verify=True).store_id == meta["store_id"]


def test_dev_and_full_prefixes_differ():
    tok_info = {"sha256": st.BUNDLED_TOKENIZER_SHA256}
    ns = lambda n: type("A", (), {"dataset_path": None, "dataset_name": "ccdv/arxiv-classification",
                                  "dataset_config": "no_ref", "dataset_revision": None,
                                  "max_examples_per_split": n})()
    dev = fetch_arxiv.default_s3_prefix(fetch_arxiv.variant_of(ns(50), tok_info))
    full = fetch_arxiv.default_s3_prefix(fetch_arxiv.variant_of(ns(None), tok_info))
    assert dev != full
    assert full == "arxiv-ergodic-scaling/ccdv__arxiv-classification/no_ref-full-tok56ac4821e129"
    assert dev.endswith("no_ref-max50-tok56ac4821e129")


def test_missing_bucket_and_missing_credentials(tmp_path, s3_env, monkeypatch, capsys):
    local = tmp_path / "local"
    with pytest.raises(SystemExit) as e:
        fetch_arxiv.main(SAMPLE + ["--output_dir", str(local), "--upload_to_s3", "--s3_bucket", "no-such-bucket"])
    assert e.value.code != 0
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")]
    assert len(err) == 1 and "bucket does not exist" in err[0]
    st.Store(local, verify=True)  # the local store is untouched
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(SystemExit) as e:
        fetch_arxiv.main(SAMPLE + ["--output_dir", str(local), "--upload_to_s3", "--s3_bucket", "any"])
    assert "no AWS credentials found" in capsys.readouterr().err
    st.Store(local, verify=True)


def test_unreachable_endpoint_fails_fast(tmp_path, s3_env, capsys):
    port = free_port()
    t0 = time.time()
    with pytest.raises(SystemExit) as e:
        fetch_arxiv.main(SAMPLE + ["--output_dir", str(tmp_path / "s"), "--download_from_s3",
                                   "--s3_bucket", "b", "--s3_endpoint_url", f"http://127.0.0.1:{port}"])
    assert e.value.code != 0
    assert time.time() - t0 < 20
    assert "cannot reach the S3 endpoint" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing built: the error came before


def test_access_denied_is_one_line_and_leaves_the_local_store(tmp_path, monkeypatch, capsys):
    """A second moto server that enforces IAM after its first 3 requests (bucket, user, key): a user with no
    policy is then denied, as a real bucket would deny a foreign account."""
    import sys
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        admin = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="AKIAADMINEXAMPLE0000",
                     aws_secret_access_key="admin-secret-key-0000000000000000000000")
        boto3.client("s3", **admin).create_bucket(Bucket="locked-bucket")
        iam = boto3.client("iam", **admin)
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        local = tmp_path / "local"
        for flag, out in (("--upload_to_s3", local), ("--download_from_s3", tmp_path / "download")):
            capsys.readouterr()
            with pytest.raises(SystemExit) as e:
                fetch_arxiv.main(SAMPLE + ["--output_dir", str(out), flag, "--s3_bucket", "locked-bucket"])
            assert e.value.code == 2
            captured = capsys.readouterr()
            err = [l for l in captured.err.splitlines() if l.startswith("error: ")]
            assert len(err) == 1 and "access denied" in err[0] and "Traceback" not in captured.err
            assert key["SecretAccessKey"] not in captured.out + captured.err
        st.Store(local, verify=True)  # built before the denied upload, and left as it was
        assert not (tmp_path / "download").exists()  # a denied download builds nothing and leaves nothing
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_compute_node_without_the_source_downloads(tmp_path, s3_env, capsys):
    """--download_from_s3 on a node where --dataset_path does not exist: the variant is named from the
    flags, the source is never read, the published store arrives."""
    _bucket(s3_env, "node")
    src = tmp_path / "login" / "sample_corpus"
    shutil.copytree(st.SAMPLE_CORPUS, src)
    built = fetch_arxiv.main(["--dataset_path", str(src), "--full_dataset", "--output_dir", str(tmp_path / "a"),
                              "--upload_to_s3", "--s3_bucket", "node"])
    missing = tmp_path / "node" / "sample_corpus"  # same name, no such directory on the node
    got = fetch_arxiv.main(["--dataset_path", str(missing), "--full_dataset", "--output_dir", str(tmp_path / "b"),
                            "--download_from_s3", "--s3_bucket", "node"])
    assert got["store_id"] == built["store_id"]
    assert not missing.exists()
    st.Store(tmp_path / "b", verify=True)


def test_download_only_takes_the_published_store_or_fails_in_one_line(tmp_path, s3_env, capsys):
    from conftest import one_line_error
    _bucket(s3_env, "pub")
    built = fetch_arxiv.main(SAMPLE + ["--output_dir", str(tmp_path / "a"), "--upload_to_s3", "--s3_bucket", "pub",
                                       "--s3_prefix", "stores/dev"])
    capsys.readouterr()
    # a node names only the prefix: no build flags to repeat (the defaults would be another variant)
    got = fetch_arxiv.main(["--download_only", "--s3_bucket", "pub", "--s3_prefix", "stores/dev",
                            "--output_dir", str(tmp_path / "node")])
    out = capsys.readouterr().out
    assert "looking for the published store at s3://pub/stores/dev" in out
    assert got["store_id"] == built["store_id"]
    st.Store(tmp_path / "node", verify=True)
    # again: already there, nothing downloaded
    fetch_arxiv.main(["--download_only", "--s3_bucket", "pub", "--s3_prefix", "stores/dev",
                      "--output_dir", str(tmp_path / "node")])
    assert "already holds the published store" in capsys.readouterr().out
    # without --s3_prefix the prefix follows the flags, and it is printed
    fetch_arxiv.main(SAMPLE + ["--output_dir", str(tmp_path / "b"), "--upload_to_s3", "--s3_bucket", "pub"])
    capsys.readouterr()
    fetch_arxiv.main(SAMPLE + ["--download_only", "--s3_bucket", "pub", "--output_dir", str(tmp_path / "c")])
    assert f"s3://pub/arxiv-ergodic-scaling/path__sample_corpus/{built['variant_id']}" in capsys.readouterr().out
    # nothing published there: one line, exit 2, no build, nothing written
    msg = one_line_error(fetch_arxiv.main, ["--download_only", "--s3_bucket", "pub", "--s3_prefix", "nothing/here",
                                            "--output_dir", str(tmp_path / "d")], capsys)
    assert "s3://pub/nothing/here" in msg and "--upload_to_s3" in msg
    assert not (tmp_path / "d").exists()
    # another store in the output directory is not replaced without --force
    msg = one_line_error(fetch_arxiv.main, ["--download_only", "--s3_bucket", "pub", "--s3_prefix", "stores/dev",
                                            "--output_dir", str(_other_store(tmp_path))], capsys)
    assert "--force" in msg


def _other_store(tmp_path):
    from conftest import make_synthetic_store
    path, _ = make_synthetic_store(tmp_path / "other")
    return path
