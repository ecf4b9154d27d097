"""The author's guide (docs/writing-filters.md) runs as written: its ``# file:`` blocks are
written to a scratch directory, the config validates with the plugin, and the guide's own tests
(the socket-free driver and a real envoi process) pass."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "writing-filters.md"


def guide_files() -> dict[str, str]:
    blocks = re.findall(r"```[a-z]*\n# file: (\S+)\n(.*?)```", GUIDE.read_text(), re.S)
    return {name: body for name, body in blocks}


def test_guide_code_runs(tmp_path: Path) -> None:
    files = guide_files()
    assert {"pyproject.toml", "acme_tenant.py", "acme_slow.py", "envoi.yaml",
            "tests/test_tenant.py"} <= set(files)
    for name, body in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    # Not installed: the module is loaded as a plugin by name (ENVOI_PLUGINS, like -p).
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ENVOI_PLUGINS": "acme_tenant"}
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c",
                          "envoi.yaml"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-p", "no:randomly", "tests"], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "4 passed" in out.stdout


def test_guide_async_example() -> None:
    """The async snippet of section 3, driven by the test driver."""
    import importlib.util

    from envoi.extensions import FactoryContext, HttpFilterFactory
    from envoi.http import FilterHeadersStatus, HttpFilterChainBuilder, HttpFilterFactoryCb
    from envoi.testing import HttpFilterDriver

    spec = importlib.util.spec_from_loader("acme_slow", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(guide_files()["acme_slow.py"], module.__dict__)  # our own doc's code

    class Factory(HttpFilterFactory):
        name = "acme.slow"

        def create_filter_factory(self, config: object,
                                  context: FactoryContext) -> HttpFilterFactoryCb:
            def add(builder: HttpFilterChainBuilder) -> None:
                builder.add_decoder_filter(module.Delay())

            return add

    with HttpFilterDriver(Factory()) as d:
        assert d.decode_headers(end_stream=True) is FilterHeadersStatus.CONTINUE
        assert d.request.headers is not None and d.request.headers["x-checked"] == "yes"


def test_per_route_config_for_a_filter_without_one_is_an_error(tmp_path: Path) -> None:
    config = guide_files()["envoi.yaml"].replace(
        "                  acme.filters.http.tenant:\n",
        "                  envoy.filters.http.router:\n").replace(
        "acme.filters.http.tenant.v1.TenantPerRoute",
        "envoy.extensions.filters.http.router.v3.Router").replace(
        "                    allowed: [ops]\n", "")
    (tmp_path / "envoi.yaml").write_text(config)
    (tmp_path / "acme_tenant.py").write_text(guide_files()["acme_tenant.py"])
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ENVOI_PLUGINS": "acme_tenant"}
    out = subprocess.run([sys.executable, "-m", "envoi", "--mode", "validate", "-c",
                          "envoi.yaml"], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60)
    assert out.returncode == 1, out.stdout
    assert ("routes[0].typed_per_filter_config[envoy.filters.http.router]: The filter "
            "envoy.filters.http.router doesn't support virtual host or route specific "
            "configurations") in out.stderr
