"""A damaged weights file is found when the weights are resolved (planning), in one line, before any model is
built or any job runs (issue 16), by reading only what is cheap: the safetensors header (through safetensors
itself, memory-mapped, no tensor loaded) and a zip checkpoint's directory. No torch import at that point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.data.weights import load_state_dict, weights_format
from harness.errors import WeightsError


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data


def one_tensor_file() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)})


def torch_checkpoint(path: Path, zip_format: bool = True) -> bytes:
    import torch

    torch.save(torch.nn.Linear(20, 20).state_dict(), path, _use_new_zipfile_serialization=zip_format)
    return path.read_bytes()


def make(case: str, folder: Path) -> tuple[Path, str]:
    """A damaged weights file and what its one line must say."""
    if case == "truncated safetensors":  # the download stopped half-way: the header is whole, the data is not
        path, data = folder / "model.safetensors", one_tensor_file()
        path.write_bytes(data[:-10])
        return path, "incomplete metadata"
    if case == "shape against bytes":  # 3x4 float32 is 48 bytes, the offsets say 40
        path = folder / "model.safetensors"
        path.write_bytes(safetensors_bytes({"w": {"dtype": "F32", "shape": [3, 4], "data_offsets": [0, 40]}},
                                           b"\0" * 40))
        return path, "not a valid safetensors file"
    if case == "unknown dtype":
        path = folder / "model.safetensors"
        path.write_bytes(safetensors_bytes({"w": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8))
        return path, "not a valid safetensors file"
    if case == "truncated zip checkpoint":
        path = folder / "pytorch_model.bin"
        path.write_bytes(torch_checkpoint(path)[:-300])  # the zip directory at the end is cut off
        return path, "is a damaged torch checkpoint"
    if case == "zip that is no checkpoint":
        import zipfile

        path = folder / "model.pt"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "not weights")
        return path, "is a zip file but not a torch checkpoint (no data.pkl among its 1 member(s))"
    raise AssertionError(case)


CASES = ["truncated safetensors", "shape against bytes", "unknown dtype", "truncated zip checkpoint",
         "zip that is no checkpoint"]


@pytest.mark.parametrize("case", CASES)
def test_a_damaged_weights_file_stops_the_run_in_one_line_before_any_work(isolated_env, capsys, case):
    path, says = make(case, isolated_env)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "-b", "resnet", "--variant", "tiny", "--weights", str(path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2
    assert len(lines) == 1 and str(path) in lines[0] and says in lines[0] and "Traceback" not in lines[0], lines
    home = isolated_env / "home"
    assert not list((home / "records").glob("*.json")) and not (home / "mlflow.db").exists()


@pytest.mark.parametrize("case", CASES)
def test_the_check_reads_no_tensors_and_imports_no_torch(isolated_env, case):
    """Planning stays cheap: the check runs in a fresh interpreter without torch ever being imported."""
    path, says = make(case, isolated_env)
    code = ("import sys\nfrom harness.errors import WeightsError\nfrom harness.data.weights import weights_format\n"
            "try:\n    weights_format(sys.argv[1])\nexcept WeightsError as exc:\n    print(exc)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60,
                         check=True).stdout.splitlines()
    assert says in out[0] and out[-1] == "False", out


def test_whole_files_pass_the_check(tmp_path):
    """The controls: whole files of every accepted kind are accepted (bf16 and fp8 included)."""
    import torch
    from safetensors.torch import save_file

    st = tmp_path / "a.safetensors"
    save_file({"a": torch.zeros(3, 4, dtype=torch.bfloat16), "b": torch.zeros(2, dtype=torch.float8_e4m3fn)}, st)
    no_suffix = tmp_path / "weights"
    no_suffix.write_bytes(one_tensor_file())
    zipped, legacy = tmp_path / "z.pt", tmp_path / "l.pth"
    torch_checkpoint(zipped)
    torch_checkpoint(legacy, zip_format=False)
    assert [weights_format(p) for p in (st, no_suffix, zipped, legacy)] == ["safetensors", "safetensors", "torch",
                                                                            "torch"]
    assert torch.equal(load_state_dict(no_suffix)["w"], torch.arange(12, dtype=torch.float32).reshape(3, 4))


def test_a_truncated_legacy_checkpoint_is_one_line_when_loaded(tmp_path):
    """A legacy (pickle) checkpoint has no directory to check cheaply: it is found when loaded, still in one line."""
    path = tmp_path / "old.pt"
    path.write_bytes(torch_checkpoint(path, zip_format=False)[:600])
    assert weights_format(path) == "torch"
    with pytest.raises(WeightsError) as err:
        load_state_dict(path)
    message = str(err.value)
    assert "\n" not in message and f"{path} cannot be read as tensors (" in message
