"""Every config in examples/ is runnable: it validates, and the demo serves as the README says."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from envoi.testing import EnvoiProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(ROOT.glob("examples/*.yaml"))


@pytest.mark.parametrize("config", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_validates(config: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c", str(config)],
                         capture_output=True, text=True, timeout=60, cwd=config.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"configuration '{config}' OK"


def test_demo_serves(envoi_process: Callable[..., EnvoiProcess]) -> None:
    admin, tcp, echo, web = free_port(), free_port(), free_port(), free_port()
    text = (ROOT / "examples/demo.yaml").read_text()
    text = text.replace("9901", str(admin)).replace("10000", str(tcp)).replace("10001", str(echo))
    text = text.replace("10002", str(web))
    envoi_process(text, admin)
    with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=10) as r:
        assert r.read() == b"hello from envoi over HTTP\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{tcp}/ready", timeout=10) as r:
        assert r.read() == b"LIVE\n"  # the admin, through tcp_proxy
    with socket.create_connection(("127.0.0.1", echo), timeout=10) as s:
        s.sendall(b"hello envoi\n")
        assert s.recv(100) == b"HELLO ENVOI\n"


def test_http_router_example_serves(envoi_process: Callable[..., EnvoiProcess]) -> None:
    admin, port = free_port(), free_port()
    text = (ROOT / "examples/http_router.yaml").read_text()
    envoi_process(text.replace("9901", str(admin)).replace("10080", str(port)), admin)
    base = f"http://127.0.0.1:{port}"
    with urllib.request.urlopen(base + "/", timeout=10) as r:
        assert r.read() == b"hello from envoi\n" and r.headers["x-served-by"] == "envoi"
    with urllib.request.urlopen(base + "/old", timeout=10) as r:  # follows the 301
        assert r.url == base + "/new" and r.read() == b"the new place\n"
    with urllib.request.urlopen(base + "/admin/ready", timeout=10) as r:
        assert r.read() == b"LIVE\n"
    try:
        urllib.request.urlopen(base + "/nothing", timeout=10)
        raise AssertionError("expected 404")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404


def test_readme_demo_commands_work_as_written(envoi_process: Callable[..., EnvoiProcess]) -> None:
    """The commands the README's first paragraph gives for the demo, run by bash as written
    (only the ports are moved to free ones): curl through tcp_proxy and the HCM, and nc, which
    on Debian 12 (netcat-openbsd) needs -N to half-close after its input."""
    import re

    readme = (ROOT / "README.md").read_text().split("\n## ", 1)[0]
    commands = re.findall(r"`((?:curl|printf) [^`]+)`", readme)
    assert len(commands) == 3, commands
    ports = {"9901": free_port(), "10000": free_port(), "10001": free_port(),
             "10002": free_port()}
    text = (ROOT / "examples/demo.yaml").read_text()
    for old, new in ports.items():
        text = text.replace(old, str(new))
    envoi_process(text, ports["9901"])
    outputs = []
    for command in commands:
        for old, new in ports.items():
            command = command.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
            command = command.replace(f"127.0.0.1 {old}", f"127.0.0.1 {new}")
        out = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                             timeout=20)
        assert out.returncode == 0, (command, out.stderr)
        outputs.append(out.stdout)
    assert "server.live: 1" in outputs[0]  # the admin's /stats, through tcp_proxy
    assert outputs[1] == "HI\n"
    assert outputs[2] == "hello from envoi over HTTP\n"


def test_dynamodb_local_example_serves(envoi_process: Callable[..., EnvoiProcess]) -> None:
    """examples/dynamodb_local.yaml as its comment says: moto's server on the upstream port,
    boto3 through envoi, the dynamo filter's stats in the admin."""
    import boto3
    import botocore.config
    from envoi.testing import wait_for

    admin, listen, upstream = free_port(), free_port(), free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(upstream)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def moto_up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", upstream), timeout=1).close()
            except OSError:
                assert moto.poll() is None, "moto.server exited"
                return False
            return True

        wait_for(moto_up, 30, what="moto.server")
        text = (ROOT / "examples/dynamodb_local.yaml").read_text()
        text = text.replace("9901", str(admin)).replace("8000", str(listen))
        proc = envoi_process(text.replace("8001", str(upstream)), admin)
        ddb = boto3.client("dynamodb", region_name="us-east-1",
                           endpoint_url=f"http://127.0.0.1:{listen}",
                           aws_access_key_id="test", aws_secret_access_key="test",
                           config=botocore.config.Config(retries={"max_attempts": 1}))
        ddb.create_table(TableName="notes", BillingMode="PAY_PER_REQUEST",
                         KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}])
        ddb.put_item(TableName="notes", Item={"id": {"S": "1"}, "text": {"S": "hi"}})
        item = ddb.get_item(TableName="notes", Key={"id": {"S": "1"}})["Item"]
        assert item == {"id": {"S": "1"}, "text": {"S": "hi"}}
        stats = proc.stats()
        for op in ("CreateTable", "PutItem", "GetItem"):
            assert stats[f"http.dynamodb.dynamodb.operation.{op}.upstream_rq_total_200"] == 1
        assert stats["http.dynamodb.dynamodb.table.notes.upstream_rq_total_200"] == 3
    finally:
        moto.terminate()
        moto.wait(10)
