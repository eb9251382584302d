import torch
from torch.utils.flop_counter import FlopCounterMode

from harness.config import BackboneConfig
from harness.report.profiles import render_profiles, update_profiles
from harness.run.profiler import profile


def test_profile_rows_and_table(tmp_path):
    cfg = BackboneConfig(name="resnet", variant="tiny")
    rows = profile(cfg, [1, 2], warmup=1, repeats=2)
    assert [r["batch_size"] for r in rows] == [1, 2]
    for r in rows:
        assert r["images_per_s"] == r["batch_size"] / r["latency_median_s"]
        assert r["latency_p90_s"] >= r["latency_median_s"] > 0
        assert r["memory_kind"] == "cpu_peak_rss_increase" and r["peak_memory_mb"] > 0
    # FLOPs per image: the same count as torch's counter on timm's model called directly (2 x MACs).
    from backbones.resnet import ResNetBackbone

    model = ResNetBackbone(cfg).model
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *rows[0]["input_size"]))
    assert rows[0]["gflops_per_image"] == counter.get_total_flops() / 1e9
    assert rows[0]["params"] == sum(p.numel() for p in model.parameters())
    table = update_profiles(rows, tmp_path)
    assert len(update_profiles(rows[:1], tmp_path)) == 2  # a re-profiled key replaces, never duplicates
    assert "| resnet" in render_profiles(table, __import__("pandas").DataFrame(), "mini")
