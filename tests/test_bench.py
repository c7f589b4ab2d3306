"""bench/run.py's measurements: a child's own peak memory, the phantom cache key."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_module():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# A parent touches 600 MB, frees it, then starts a child that reports both memory measures.
PARENT = f"""
import json, resource, subprocess, sys
import numpy as np
a = np.ones(600 * 2**20, np.uint8); del a
child = '''
import importlib.util, json, resource
spec = importlib.util.spec_from_file_location("b", {str(ROOT / "bench" / "run.py")!r})
b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
print(json.dumps([b.peak_rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024]))
'''
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout)
"""


def test_peak_memory_is_the_childs_own():
    """ru_maxrss of a subprocess starts from its parent's peak; the bench reads the child's
    own high-water mark, as its memory table needs."""
    out = subprocess.run([sys.executable, "-c", PARENT], capture_output=True, text=True)
    own, inherited = json.loads(out.stdout.strip().splitlines()[-1])
    assert own < 400, own  # the child imports numpy and shindan: far less than 600 MB
    assert inherited > 600  # the measure the bench used to read carries the parent's peak


def test_phantom_key_follows_the_parameters():
    b = bench_module()
    key = b.phantom_key(20000, 1, 0.5)
    assert key == b.phantom_key(20000, 1, 0.5)
    assert len({key, b.phantom_key(20001, 1, 0.5), b.phantom_key(20000, 2, 0.5)}) == 3
    assert key != b.phantom_key(20000, 1, 0.25)


def test_default_memory_sizes_skip_the_slow_slide():
    """`make bench` runs the 20000² slide by default; 100000² (30 minutes to write) is an
    option; phantoms are cached outside the repository."""
    b = bench_module()
    assert b.build_parser().parse_args([]).sizes == "20000"
    assert b.build_parser().parse_args(["--sizes", "20000,100000"]).sizes == "20000,100000"
    assert ROOT not in b.WORK.parents and b.WORK != ROOT


def test_plain_export_is_the_unfolded_net(tmp_path, monkeypatch):
    """The kidney analyze yardstick: the same weights exported without pad folding (the
    graph session 8 measured), cached per weights file, giving the same logits."""
    import numpy as np
    import onnx
    import torch

    from shindan.engine import load_predictor
    from shindan.models import build_network, save_model
    from tests.helpers import seg_card_dict

    b = bench_module()
    monkeypatch.setattr(b, "WORK", tmp_path / "cache")
    torch.manual_seed(0)
    data = seg_card_dict(size=64, overlap=16, classes=3)
    data["architecture"]["kwargs"]["encoder_name"] = "tu-tf_efficientnet_lite0"
    card = save_model(build_network(data), data, tmp_path / "m")
    folder = b.plain_export(str(card.directory))
    ops = [n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node]
    assert "Pad" in ops
    assert "Pad" not in [n.op_type for n in onnx.load(str(card.onnx_path)).graph.node]
    assert b.plain_export(str(card.directory)) == folder  # cached
    x = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), np.uint8)
    a, c = (load_predictor(str(f), "onnx").logits(x) for f in (folder, card.directory))
    np.testing.assert_allclose(a, c, atol=1e-4)


def test_bf16_rows_only_on_cpus_with_native_bf16(monkeypatch):
    import shindan.engine.backends as backends

    b = bench_module()
    monkeypatch.setattr(backends, "bf16_supported", lambda: False)
    assert b._bf16() == ()
    monkeypatch.setattr(backends, "bf16_supported", lambda: True)
    assert b._bf16() == ("torch-bf16",)


def test_other_sections_of_benchmarks_md_are_kept(tmp_path):
    """A rewrite of BENCHMARKS.md keeps sections other measurements added, not its own."""
    b = bench_module()
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(
        "# Benchmarks\n\nold head\n\n## Pipeline efficiency (old title; target ≥ 0.85)\n\n"
        "| old |\n\n## Start-up and install (targets: x)\n\nkept text\n| a |\n"
    )
    kept = b.other_sections(md, ["Pipeline efficiency (end-to-end; target ≥ 0.85)"])
    assert kept == "\n## Start-up and install (targets: x)\n\nkept text\n| a |\n"
    assert b.other_sections(tmp_path / "missing.md", []) == ""
