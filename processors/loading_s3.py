"""``s3://bucket/key`` documents, fetched with boto3 in a thread.

Credentials are boto3's standard chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a
profile, an instance or task role), the region ``AWS_REGION``/``AWS_DEFAULT_REGION``. An
S3-compatible store (MinIO, Ceph, R2, moto) is reached through boto3's own endpoint override,
``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL`` for every service), with
``VECTORIZER_S3_ADDRESSING_STYLE=path`` for stores that do not serve bucket subdomains. With
``aws_role_arn`` the role is assumed through STS first (``AWS_ASSUME_ROLE_EXTERNAL_ID`` as the
external id, as pgai does) and the temporary credentials are renewed before they expire.
boto3's own retries are off: the loader retries transient errors ``retries`` times itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from processors.loading import LoadError, LoadSettings, too_large
from processors.parsing import Document

#: S3 error codes worth trying again; everything else (NoSuchKey, AccessDenied, ...) is final
_TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "500", "502", "503", "504"})
_FINAL_REASONS = {
    "NoSuchKey": "no such object", "404": "no such object", "NotFound": "no such object",
    "NoSuchBucket": "no such bucket", "AccessDenied": "access denied (HTTP 403)",
    "403": "access denied (HTTP 403)", "InvalidAccessKeyId": "the AWS access key is not known",
    "SignatureDoesNotMatch": "the AWS secret key does not match the access key",
    "ExpiredToken": "the AWS session token has expired",
}
#: renew assumed-role credentials this long before they expire
_RENEW_BEFORE_S = 300.0


class S3Fetcher:
    """One boto3 client per loader (thread-safe), or per assumed role and its expiry."""

    def __init__(self, settings: LoadSettings, role_arn: str | None = None) -> None:
        self.settings = settings
        self.role_arn = role_arn
        self._lock = threading.Lock()
        self._client: Any = None
        self._expires = float("inf")

    def _config(self) -> Any:
        from botocore.config import Config

        style = os.environ.get("VECTORIZER_S3_ADDRESSING_STYLE", "").strip() or "auto"
        return Config(connect_timeout=self.settings.timeout_s, read_timeout=self.settings.timeout_s,
                      retries={"max_attempts": 1, "mode": "standard"},
                      s3={"addressing_style": style})

    def _s3(self) -> Any:
        with self._lock:
            if self._client is not None and time.time() < self._expires - _RENEW_BEFORE_S:
                return self._client
            import boto3

            if self.role_arn is None:
                self._client = boto3.session.Session().client("s3", config=self._config())
                return self._client
            session = boto3.session.Session()
            kwargs: dict[str, Any] = {"RoleArn": self.role_arn,
                                      "RoleSessionName": "pg-stream-vectorizer"}
            external_id = os.environ.get("AWS_ASSUME_ROLE_EXTERNAL_ID")
            if external_id:
                kwargs["ExternalId"] = external_id
            credentials = session.client("sts", config=self._config()).assume_role(
                **kwargs)["Credentials"]
            self._client = boto3.session.Session(
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
            ).client("s3", config=self._config())
            self._expires = credentials["Expiration"].timestamp()
            return self._client

    def _get(self, bucket: str, key: str) -> Document:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )

        limit = self.settings.max_bytes
        try:
            response = self._s3().get_object(Bucket=bucket, Key=key)
            body = response["Body"]
            try:
                size = int(response.get("ContentLength") or 0)
                if size > limit:
                    raise too_large(size, limit)
                data = body.read(limit + 1)
            finally:
                body.close()
        except NoCredentialsError:
            raise LoadError("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                            "(or a profile or role) in the worker's environment") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _FINAL_REASONS:
                raise LoadError(_FINAL_REASONS[code], status=status) from None
            transient = code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500)
            raise LoadError(f"S3 error {code}: {error.get('Message', '')}".strip(),
                            transient=transient, status=status) from None
        except (ReadTimeoutError, ConnectionError) as exc:  # timeouts, refused connections
            raise LoadError(f"S3 not reachable: {exc}", transient=True) from None
        except BotoCoreError as exc:
            raise LoadError(f"S3 request failed: {exc}") from None
        if len(data) > limit:
            raise too_large(len(data), limit)
        return Document(data, name=f"s3://{bucket}/{key}",
                        content_type=response.get("ContentType"))

    async def fetch(self, uri: str) -> Document:
        parts = urlsplit(uri)
        bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
        if not bucket or not key:
            raise LoadError("an S3 URI needs a bucket and a key: s3://bucket/path/to/object")
        return await asyncio.to_thread(self._get, bucket, key)
