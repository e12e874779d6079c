"""A published store is never replaced by another store of the same variant (another store_id) without
--force, and a node whose local store differs from the published one is told so. The corpus case: two local
corpora in directories of the same name share a variant (it keeps only the basename) but not a store_id."""
import json
import os
import shutil
import subprocess

import boto3

import fetch_arxiv
import store as st
from conftest import one_line_error, write_hub_copy


def _published_meta(s3_env, bucket, prefix, aws=False):
    """meta.json as published (aws: as the aws CLI, an independent client, reads it)."""
    if not aws:
        c = boto3.client("s3", endpoint_url=s3_env)
        return json.loads(c.get_object(Bucket=bucket, Key=f"{prefix}/meta.json")["Body"].read())
    r = subprocess.run([shutil.which("aws"), "s3", "cp", f"s3://{bucket}/{prefix}/meta.json", "-",
                        "--endpoint-url", s3_env], capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_same_variant_other_store_refused_unless_force(tmp_path, s3_env, capsys):
    boto3.client("s3", endpoint_url=s3_env).create_bucket(Bucket="ids")
    one = tmp_path / "login1" / "corpus"
    shutil.copytree(st.SAMPLE_CORPUS, one)
    rows = [(f"paper {i} about {c} " * 20, i % 11) for i, c in enumerate(st.CATEGORIES * 2)]
    two = write_hub_copy(tmp_path / "login2" / "corpus", {"train": rows, "validation": rows[:11], "test": rows[:11]})
    a = fetch_arxiv.main(["--dataset_path", str(one), "--full_dataset", "--output_dir", str(tmp_path / "a"),
                          "--upload_to_s3", "--s3_bucket", "ids"])
    prefix = f"arxiv-ergodic-scaling/path__corpus/{a['variant_id']}"
    assert _published_meta(s3_env, "ids", prefix)["store_id"] == a["store_id"]
    # another corpus in a directory of the same name: the same variant, another store: refused, both named
    argv = ["--dataset_path", str(two), "--full_dataset", "--output_dir", str(tmp_path / "b"), "--upload_to_s3",
            "--s3_bucket", "ids"]
    msg = one_line_error(fetch_arxiv.main, argv, capsys)
    b = st.read_meta(tmp_path / "b")  # built before the refused upload, kept
    assert b["variant"] == a["variant"] and b["store_id"] != a["store_id"]
    assert a["store_id"] in msg and b["store_id"] in msg and "--force" in msg
    assert _published_meta(s3_env, "ids", prefix, aws=True)["store_id"] == a["store_id"]  # untouched
    # a node with the first store, asking for the published one: reused (same store) ...
    node = tmp_path / "node"
    fetch_arxiv.main(["--dataset_path", str(one), "--full_dataset", "--output_dir", str(node), "--download_from_s3",
                      "--s3_bucket", "ids"])
    assert st.read_meta(node)["store_id"] == a["store_id"]
    # ... then --force replaces the published store
    fetch_arxiv.main(argv + ["--force"])
    assert _published_meta(s3_env, "ids", prefix)["store_id"] == b["store_id"]
    # the node's local store now differs from the published one: it says so, naming both
    for extra in ([], ["--download_only"]):
        msg = one_line_error(fetch_arxiv.main, ["--dataset_path", str(one), "--full_dataset", "--output_dir",
                                                str(node), "--download_from_s3", "--s3_bucket", "ids", *extra], capsys)
        assert a["store_id"] in msg and b["store_id"] in msg and "--force" in msg, msg
        assert st.read_meta(node)["store_id"] == a["store_id"]
    fetch_arxiv.main(["--dataset_path", str(one), "--full_dataset", "--output_dir", str(node), "--download_from_s3",
                      "--s3_bucket", "ids", "--force"])
    assert st.Store(node, verify=True).store_id == b["store_id"]
