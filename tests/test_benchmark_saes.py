"""benchmarks/saes.py still runs end to end (tiny setting; its numbers are not checked here) and saves a loadable SAE."""
import importlib.util
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("benchmark_saes", ROOT / "benchmarks" / "saes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sae_benchmark_quick(capsys, tmp_path):
    threads = torch.get_num_threads()
    try:
        assert _load().main(["--quick", "--threads", "1", "--save", str(tmp_path / "sae")]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    for line in ("linear probe ceiling: current token", "CE recovered vs mean ablation",
                 "L0 / explained-variance frontier", "throughput at width 64", "targets (TopK run)"):
        assert line in out
    from interplab import saes

    sae = saes.load_sae(tmp_path / "sae")
    assert sae.cfg.architecture == "topk" and sae.cfg.hook_name == "blocks.1.hook_resid_pre"
    assert saes.read_sae_config(tmp_path / "sae")["interplab"]["settings"]["steps"] == 30


def test_sae_benchmark_facts_quick(capsys):
    threads = torch.get_num_threads()
    try:
        assert _load().main(["--world", "facts", "--quick", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "facts-4l at blocks.1.hook_resid_pre, last subject token" in out
    assert out.count("variables recovered by one latent: city") == 2
