"""Talking to a served studio's knowledge API as a script would: JSON, and multipart uploads."""

import json
import time
import urllib.error
import urllib.request
import uuid


def api(studio, method, path, body=None, *, files=None, token=None):
    headers = {"Authorization": f"Bearer {token or studio.token}"}
    data = None
    if files is not None:
        boundary = uuid.uuid4().hex
        data = (
            b"".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n".encode()
                + content
                + b"\r\n"
                for name, content in files
            )
            + f"--{boundary}--\r\n".encode()
        )
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(studio.base_url + path, method=method, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_for(studio, path, condition, timeout=240):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, state = api(studio, "GET", path)
        if condition(state):
            return state
        time.sleep(0.2)
    raise TimeoutError(f"{path}: {state}")
