"""
S3 sync of a token store (see store.py for the format). meta.json is the commit marker: uploaded last,
downloaded first; a prefix without it holds no complete store. Every data object carries its sha256 as
user metadata so that an identical re-upload can be skipped without reading the remote bytes.
"""
import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from store import (DATA_FILES, StoreError, host_tag, is_no_space, no_space_error, publish_dir, read_meta,
                   sha256_file, temp_dir_beside, write_json_atomic)


def _s3_fail(e, what):
    """Translate a boto3/botocore exception into a one-line StoreError (never echoing credentials)."""
    import botocore.exceptions as bx
    if isinstance(e, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return StoreError(f"{what}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                          "AWS_PROFILE, or use an instance role)")
    if isinstance(e, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                      bx.ConnectionClosedError)):
        return StoreError(f"{what}: cannot reach the S3 endpoint ({type(e).__name__}); check "
                          "--s3_endpoint_url / AWS_ENDPOINT_URL and the network")
    if isinstance(e, bx.ClientError):
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket",):
            return StoreError(f"{what}: the bucket does not exist; create it or fix --s3_bucket")
        if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
            return StoreError(f"{what}: access denied; check the credentials' permissions on the bucket")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"):
            return StoreError(f"{what}: the AWS credentials were rejected ({code})")
        return StoreError(f"{what}: S3 error {code}: {e.response.get('Error', {}).get('Message', '')}")
    if isinstance(e, bx.BotoCoreError):
        return StoreError(f"{what}: {type(e).__name__}: {e}")
    return None


def s3_client(endpoint_url=None):
    """A boto3 S3 client with short timeouts and bounded retries: an unreachable endpoint fails in seconds."""
    import boto3
    from botocore.config import Config
    cfg = Config(connect_timeout=3, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"})
    # a fresh Session, not boto3's module-level default one: that one caches credentials for the life of
    # the process and is not thread-safe
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
                        config=cfg)


@contextlib.contextmanager
def _s3_errors(what):
    """botocore errors inside become one-line StoreErrors; anything else is a bug and propagates."""
    try:
        yield
    except StoreError:
        raise
    except Exception as e:
        err = _s3_fail(e, what)
        if err is None:
            raise
        raise err from None


def _absent(e):
    """Whether a ClientError says the object does not exist."""
    return str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


def _key(prefix, name):
    return f"{prefix.rstrip('/')}/{name}" if prefix else name


def _head(client, bucket, key):
    import botocore.exceptions as bx
    try:
        return client.head_object(Bucket=bucket, Key=key)
    except bx.ClientError as e:
        if _absent(e):
            return None
        raise


def remote_meta(bucket, prefix, client):
    """The remote store's meta.json, or None when the prefix holds no complete store (S3 errors: one line)."""
    with _s3_errors(f"read s3://{bucket}/{prefix}/meta.json"):
        return _remote_meta(bucket, prefix, client)


def _remote_meta(bucket, prefix, client):
    import botocore.exceptions as bx
    try:
        body = client.get_object(Bucket=bucket, Key=_key(prefix, "meta.json"))["Body"].read()
    except bx.ClientError as e:
        if _absent(e):
            return None
        raise
    return json.loads(body)


def _transfer_config():
    from boto3.s3.transfer import TransferConfig
    # multipart above 64 MiB: tokens.bin of the full dataset is ~1 GB
    return TransferConfig(multipart_threshold=64 << 20, multipart_chunksize=64 << 20, max_concurrency=8)


def upload_store(data_dir, bucket, prefix, client, log=print, force=False):
    """Upload a complete local store. Returns the number of bytes sent (0 for an identical store).

    A published store of the same variant but another store_id (rebuilt after the source or the hub's
    conversion changed, or built from another corpus in a directory of the same name: the variant keeps
    only the basename) is replaced only with force: runs already trained on it name its store_id."""
    from tqdm import tqdm
    data_dir = Path(data_dir)
    meta = read_meta(data_dir)
    if meta is None:
        raise StoreError(f"{data_dir}: no complete store to upload")
    where = f"s3://{bucket}/{prefix}"
    with _s3_errors(f"upload to {where}"):
        remote = _remote_meta(bucket, prefix, client)
        if remote is not None and remote.get("variant") != meta.get("variant"):
            raise StoreError(f"{where} holds a store of another variant ({remote.get('variant_id')}), "
                             f"not {meta.get('variant_id')}; refusing to overwrite it (choose another --s3_prefix)")
        if remote is not None and remote.get("store_id") != meta["store_id"] and not force:
            raise StoreError(f"{where} holds store {remote.get('store_id')}, this one is {meta['store_id']} (same "
                             f"variant {meta.get('variant_id')}, other content: another source or build); refusing "
                             "to replace it: --force replaces it, or choose another --s3_prefix")
        sent = 0
        todo = []
        for name in DATA_FILES:
            spec = meta["files"][name]
            head = _head(client, bucket, _key(prefix, name))
            if head and head["ContentLength"] == spec["bytes"] and head.get("Metadata", {}).get("sha256") == spec["sha256"]:
                continue
            todo.append(name)
        meta_bytes = (data_dir / "meta.json").read_bytes()
        if not todo and remote is not None and remote.get("store_id") == meta["store_id"]:
            log(f"{where}: remote store is identical (store_id {meta['store_id'][:12]}); nothing uploaded")
            return 0
        if remote is not None:
            # the remote is about to change: drop its commit marker first so no reader sees a mix
            client.delete_object(Bucket=bucket, Key=_key(prefix, "meta.json"))
        for name in todo:
            size = meta["files"][name]["bytes"]
            with tqdm(total=size, unit="B", unit_scale=True, desc=f"upload {name}") as bar:
                client.upload_file(str(data_dir / name), bucket, _key(prefix, name),
                                   ExtraArgs={"Metadata": {"sha256": meta["files"][name]["sha256"]}},
                                   Config=_transfer_config(), Callback=bar.update)
            sent += size
        client.put_object(Bucket=bucket, Key=_key(prefix, "meta.json"), Body=meta_bytes,
                          Metadata={"sha256": hashlib.sha256(meta_bytes).hexdigest()})
        sent += len(meta_bytes)
    log(f"{where}: uploaded {len(todo)} data file(s) + meta.json, {sent:,} bytes")
    return sent


def download_store(bucket, prefix, data_dir, expected_variant, client, log=print):
    """Fetch a complete remote store into data_dir. False when the remote holds no complete store.

    The variant must match (expected_variant None: any); every file's sha256 is checked before the store
    is put in place.
    """
    from tqdm import tqdm
    where = f"s3://{bucket}/{prefix}"
    tmp = None
    try:
        with _s3_errors(f"download from {where}"):
            meta = _remote_meta(bucket, prefix, client)
            if meta is None:
                log(f"{where}: no complete store there (no meta.json)")
                return False
            if expected_variant is not None and meta.get("variant") != expected_variant:
                raise StoreError(f"{where} holds a store of another variant ({meta.get('variant_id')}); "
                                 "refusing to use it (fix --s3_prefix or the build flags)")
            tmp = temp_dir_beside(data_dir, tag=host_tag("download"))
            for name in DATA_FILES:
                spec = meta["files"][name]
                with tqdm(total=spec["bytes"], unit="B", unit_scale=True, desc=f"download {name}") as bar:
                    client.download_file(bucket, _key(prefix, name), str(tmp / name),
                                         Config=_transfer_config(), Callback=bar.update)
                digest = sha256_file(tmp / name)
                if digest != spec["sha256"]:
                    raise StoreError(f"{where}/{name}: sha256 {digest[:16]}... does not match the remote manifest "
                                     f"({spec['sha256'][:16]}...); the remote file is corrupt")
            write_json_atomic(tmp / "meta.json", meta, indent=1)
            publish_dir(tmp, data_dir)
            tmp = None
    except OSError as e:
        if is_no_space(e):  # boto3 raises the local write's error as it is
            if tmp is not None:  # first make room: the message then says what is really free
                shutil.rmtree(tmp, ignore_errors=True)
                tmp = None
            raise no_space_error(data_dir) from None
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    log(f"{where}: downloaded and verified store {meta['store_id'][:12]} into {data_dir}")
    return True
