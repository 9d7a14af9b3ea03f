"""A small Python client for the Labelf Studio /v2 API. Its only dependency is `requests`.

    from labelf_studio.client import Client
    client = Client("https://labelf.example.com", "lf_...")
    predictions = client.classify(42, ["I want to cancel my subscription", ...])  # any number of texts

Retry strategy (the documented one): a 429 waits `Retry-After` seconds and tries again; a 5xx or a
connection error backs off 1 s, 2 s, 4 s (at most 3 retries); any other 4xx raises at once. Errors
are typed (`NotFound`, `Forbidden`, ...), all subclasses of `ApiError`, and carry the server's
`status`, `error_code`, `request_id` and `message`.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import requests

INFERENCE_BATCH = 8  # the server's limit per inference request
BACKOFF_SECONDS = (1, 2, 4)  # waits before the 1st, 2nd and 3rd retry of a 5xx or connection error
MAX_RATE_LIMIT_RETRIES = 5
PAGE_SIZE = 100


class ApiError(Exception):
    """An error answer from the API (or, for `ConnectionFailed`, no answer at all)."""

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None,
                 request_id: str | None = None, retry_after: int | None = None):
        super().__init__(f"{status} {error_code}: {message}" if status else message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.request_id = request_id
        self.retry_after = retry_after


class BadRequest(ApiError):
    """400: malformed JSON, a missing or invalid field, empty or too many texts."""


class Unauthorized(ApiError):
    """401: missing, unknown or revoked API key."""


class Forbidden(ApiError):
    """403: the key's role may not do this, or the monthly quota is used up (error_code QUOTA_EXCEEDED)."""


class NotFound(ApiError):
    """404: no such path, or no such object in this workspace."""


class Conflict(ApiError):
    """409: the object's state does not allow this (archived, not deployed, dataset still importing...)."""


class RateLimited(ApiError):
    """429 after the retries were used up; `retry_after` holds the server's last Retry-After."""


class ServerError(ApiError):
    """5xx after the retries were used up."""


class ConnectionFailed(ApiError):
    """The server could not be reached (after the retries were used up)."""


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 429: RateLimited}


def _error_from(response: requests.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    status = response.status_code
    cls = ServerError if status >= 500 else _BY_STATUS.get(status, ApiError)
    retry_after = _retry_after(response) if status == 429 else None
    return cls(body.get("message") or response.reason or "error", status=status, error_code=body.get("error_code"),
               request_id=body.get("request_id") or response.headers.get("X-Request-ID"), retry_after=retry_after)


def _retry_after(response: requests.Response) -> int:
    try:
        return max(0, int(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 30, *, sleep: Callable[[float], None] = time.sleep,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._sleep = sleep
        self._session = session or requests.Session()
        self._session.headers.update({"Authorization": f"Bearer {api_key}", "Accept": "application/json"})

    # --- transport ------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json: Any = None, params: Mapping | None = None,
                files: Mapping | None = None, data: Mapping | None = None) -> Any:
        """One API call with the retry strategy; returns the decoded JSON body (None for 204)."""
        url = self.base_url + (path if path.startswith("/") else "/" + path)
        server_retries = 0
        rate_limit_retries = 0
        while True:
            try:
                response = self._session.request(method, url, json=json, params=params, files=files, data=data,
                                                 timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if server_retries >= len(BACKOFF_SECONDS):
                    raise ConnectionFailed(f"could not reach {url}: {exc}") from exc
                self._sleep(BACKOFF_SECONDS[server_retries])
                server_retries += 1
                continue
            if response.status_code == 429 and rate_limit_retries < MAX_RATE_LIMIT_RETRIES:
                self._sleep(_retry_after(response))
                rate_limit_retries += 1
                continue
            if response.status_code >= 500 and server_retries < len(BACKOFF_SECONDS):
                self._sleep(BACKOFF_SECONDS[server_retries])
                server_retries += 1
                continue
            if response.status_code >= 400:
                raise _error_from(response)
            if response.status_code == 204 or not response.content:
                return None
            return response.json()

    def _pages(self, path: str, params: Mapping | None = None) -> Iterator[dict]:
        offset = 0
        while True:
            page = self.request("GET", path, params={**(params or {}), "offset": offset, "limit": PAGE_SIZE})
            yield from page["data"]
            if not page["has_more"] or not page["data"]:
                return
            offset += len(page["data"])

    # --- models ---------------------------------------------------------------------------------

    def models(self) -> list[dict]:
        """Every model of the workspace (all pages)."""
        return list(self._pages("/v2/models"))

    def model(self, model_id: int) -> dict:
        return self.request("GET", f"/v2/models/{int(model_id)}")

    def create_model(self, name: str, dataset_id: int, labels: Mapping[str, str] | Sequence[Mapping[str, str]]) -> dict:
        """A describe-and-classify model; `labels` is `{name: description}` or `[{"name", "description"}]`."""
        if isinstance(labels, Mapping):
            labels = [{"name": label, "description": description} for label, description in labels.items()]
        return self.request("POST", "/v2/models", json={"name": name, "dataset_id": dataset_id, "labels": list(labels),
                                                         "type": "describe-and-classify"})

    def update_model(self, model_id: int, **fields: Any) -> dict:
        return self.request("PATCH", f"/v2/models/{int(model_id)}", json=fields)

    def versions(self, model_id: int) -> list[dict]:
        return list(self._pages(f"/v2/models/{int(model_id)}/versions"))

    def deploy(self, model_id: int, version: int | None = None) -> dict:
        body = {} if version is None else {"version": version}
        return self.request("POST", f"/v2/models/{int(model_id)}/deploy", json=body)

    def archive(self, model_id: int) -> dict:
        return self.request("POST", f"/v2/models/{int(model_id)}/archive", json={})

    def train(self, model_id: int, type: str) -> dict:
        """Queues a training job (`active-learning` or `fine-tuned`); returns the job."""
        return self.request("POST", f"/v2/models/{int(model_id)}/train", json={"type": type})

    def job(self, job_id: int) -> dict:
        return self.request("GET", f"/v2/jobs/{int(job_id)}")

    def classify(self, model_id: int, texts: Iterable[str]) -> list[dict]:
        """Predictions for any number of texts, in order, sent in requests of at most 8 texts."""
        texts = list(texts)
        predictions: list[dict] = []
        for start in range(0, len(texts), INFERENCE_BATCH):
            answer = self.request("POST", f"/v2/models/{int(model_id)}/inference",
                                  json={"texts": texts[start:start + INFERENCE_BATCH]})
            predictions.extend(answer["predictions"])
        return predictions

    def similarity(self, texts: Sequence[str], queries: Sequence[str] | None = None) -> list[list[float]]:
        body: dict[str, Any] = {"texts": list(texts)}
        if queries is not None:
            body["queries"] = list(queries)
        return self.request("POST", "/v2/similarity", json=body)["matrix"]

    # --- datasets and labeling -------------------------------------------------------------------

    def datasets(self) -> list[dict]:
        return list(self._pages("/v2/datasets"))

    def dataset(self, dataset_id: int) -> dict:
        return self.request("GET", f"/v2/datasets/{int(dataset_id)}")

    def upload_dataset(self, name: str, path: str | os.PathLike) -> dict:
        """Uploads a CSV or JSONL file; the dataset answers `processing` until its import finishes."""
        with open(path, "rb") as handle:
            content = handle.read()  # read once, so a retry sends the same bytes again
        return self.request("POST", "/v2/datasets", data={"name": name},
                            files={"file": (os.path.basename(os.fspath(path)), content)})

    def recommendations(self, model_id: int, limit: int = 20) -> list[dict]:
        return self.request("GET", f"/v2/models/{int(model_id)}/recommendations", params={"limit": limit})["data"]

    def submit_labels(self, model_id: int, labels: Mapping[int, str] | Sequence[Mapping[str, Any]]) -> dict:
        """`labels` is `{record_id: label}` or `[{"record_id", "label"}]`."""
        if isinstance(labels, Mapping):
            labels = [{"record_id": record_id, "label": label} for record_id, label in labels.items()]
        return self.request("POST", f"/v2/models/{int(model_id)}/labels", json={"labels": list(labels)})
