"""Hostile or mistaken inputs end in ONE line that names the input, a non-zero exit, and no work done (issue 16).

Each group drives the real CLI in-process through `harness.cli.main` (what the console script calls), so the
one-line printing is exercised too; cases that can only show up once a file is loaded call the loader directly.
No case builds a backbone: validation stops every one of them first.
"""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import pytest

from harness.cli import main


def cli(capsys, *args: str) -> tuple[int, list[str]]:
    """Run `harness ARGS` in this process: (exit code, the non-empty lines it wrote to stderr)."""
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    err = capsys.readouterr().err
    return exit_.value.code, [line for line in err.splitlines() if line.strip()]


def assert_one_line(code: int, lines: list[str], *names: str) -> str:
    assert code not in (0, None), lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def nothing_ran(home: Path) -> bool:
    """No run record and no MLflow store: the run stopped before any job (or the tracker) started."""
    return not list((home / "records").glob("*.json")) and not (home / "mlflow.db").exists()


# -- weights ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content, says", [
    ("notes.txt", b"hello\n", "neither a safetensors file nor a torch checkpoint"),
    ("pytorch_model.bin", b"hello\n", "neither a safetensors file nor a torch checkpoint"),
    ("empty.pt", b"", "neither a safetensors file nor a torch checkpoint"),
    ("model.safetensors", b"hello\n", "not a valid safetensors file"),
    ("huge.safetensors", (10**12).to_bytes(8, "little") + b"{}", "header claims"),
    ("html.safetensors", (6).to_bytes(8, "little") + b"<html>", "header is not JSON"),
])
def test_a_weights_file_that_is_not_tensors_is_one_line_before_any_work(isolated_env, capsys, name, content, says):
    path = isolated_env / name
    path.write_bytes(content)
    code, lines = cli(capsys, "run", "-b", "resnet", "--variant", "tiny", "--weights", str(path))
    assert_one_line(code, lines, str(path), says)
    assert nothing_ran(isolated_env / "home")


def test_a_weights_folder_with_a_text_weights_file_is_one_line(isolated_env, capsys):
    folder = isolated_env / "weights"
    folder.mkdir()
    (folder / "model.safetensors").write_text("<html>404</html>")
    code, lines = cli(capsys, "run", "-b", "resnet", "--variant", "tiny", "--weights", str(folder))
    assert_one_line(code, lines, str(folder / "model.safetensors"), "not a valid safetensors file")


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("case", ["refused pickle", "truncated zip", "wrong shapes", "wrong keys"])
def test_weights_that_cannot_be_loaded_are_one_line(tmp_path, case):
    import torch

    from harness.data.weights import fit_state_dict, load_state_dict
    from harness.errors import WeightsError

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    path = tmp_path / "w.pt"
    if case == "refused pickle":
        torch.save({"0.weight": torch.zeros(3, 4), "payload": _Payload()}, path)
        expect = r"w\.pt was refused: it holds a Python object \(\w+\.system\)"
    elif case == "truncated zip":
        torch.save(model.state_dict(), path)
        path.write_bytes(path.read_bytes()[:200])
        expect = r"w\.pt is a damaged torch checkpoint \(its zip directory cannot be read: "
    else:
        torch.save(model.state_dict(), path)
        state = load_state_dict(path)
        if case == "wrong shapes":  # 2 mismatches; torch's own message has a paragraph per key
            state["0.weight"], state["1.weight"] = torch.zeros(5, 4), torch.zeros(2, 5)
            expect = r"2 shape mismatches \(e\.g\. '0\.weight': file \[5, 4\], model \[3, 4\]\) of 4 keys"
        else:
            state["extra.bias"] = state.pop("1.bias")
            expect = r"1 missing \(e\.g\. '1\.bias'\), 1 unexpected \(e\.g\. 'extra\.bias'\) of 4 keys"
    with pytest.raises(WeightsError) as err:
        fit_state_dict(model, load_state_dict(path) if case in ("refused pickle", "truncated zip") else state, path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert re.search(expect, message), message


# -- devices ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("device, says", [
    ("cuda", "device 'cuda' (--device) is not available"),
    ("cuda:7", "device 'cuda:7' (--device) is not available"),
    ("toaster", "'--device': unknown device 'toaster'; expected cpu | cuda | cuda:N | mps | auto"),
    ("cuda:x", "unknown device 'cuda:x'"),
])
def test_a_device_this_machine_lacks_is_one_line(isolated_env, capsys, monkeypatch, device, says):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same on a GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, lines = cli(capsys, "run", "-b", "resnet", "--variant", "tiny", "--device", device)
    assert_one_line(code, lines, says)
    assert nothing_ran(isolated_env / "home")


def test_a_suite_device_is_checked_too(isolated_env, capsys):
    suite = isolated_env / "s.yaml"
    suite.write_text("name: s\ndevice: toaster\nentries:\n  - task: fsc\n    datasets: [mini_coop]\n")
    code, lines = cli(capsys, "run", "-b", "resnet", "--suite", str(suite))
    assert_one_line(code, lines, str(suite), "'device': unknown device 'toaster'")


# -- numbers ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["run", "-b", "resnet", "--batch-size", "-5"], "'--batch-size': Input should be greater than or equal to 1"),
    (["run", "-b", "resnet", "--batch-size", "0"], "'--batch-size': Input should be greater than or equal to 1"),
    (["run", "-b", "resnet", "--batch-size", "100000000"], "'--batch-size': Input should be less than or equal"),
    (["run", "-b", "resnet", "--seeds", "a"], "--seeds expects integers like 1,2,3, got 'a'"),
    (["run", "-b", "resnet", "--seeds", "1,x,3"], "--seeds expects integers like 1,2,3, got 'x' in '1,x,3'"),
    (["sweep", "-b", "vermouth", "--param", "t=1", "--seeds", "a"], "--seeds expects integers"),
    (["profile", "-b", "resnet", "--batch-sizes", "a"], "--batch-sizes expects integers like 1,2,3, got 'a'"),
    (["profile", "-b", "resnet", "--batch-sizes", "0"], "--batch-sizes: 0 is out of range"),
    (["profile", "-b", "resnet", "--batch-sizes", "8,-1"], "--batch-sizes: -1 is out of range"),
])
def test_bad_numbers_on_the_command_line_are_one_line(isolated_env, capsys, args, says):
    code, lines = cli(capsys, *args)
    assert_one_line(code, lines, says)
    assert nothing_ran(isolated_env / "home")


@pytest.mark.parametrize("value", ["abc", "-3", "nan", "inf"])
@pytest.mark.parametrize("command", [["run", "-b", "resnet"], ["cache", "info"]])
def test_a_bad_cache_budget_in_the_environment_is_one_line(isolated_env, capsys, monkeypatch, value, command):
    monkeypatch.setenv("HARNESS_CACHE_BUDGET_GB", value)
    code, lines = cli(capsys, *command)
    assert_one_line(code, lines, "HARNESS_CACHE_BUDGET_GB", f"'{value}'")
    assert nothing_ran(isolated_env / "home")


def test_valid_numbers_parse():
    from harness.config import parse_ints
    from harness.data.cache import budget_gb

    assert parse_ints("--seeds", " 1, 2,3 ") == [1, 2, 3]
    os.environ.pop("HARNESS_CACHE_BUDGET_GB", None)
    assert budget_gb() == 50.0


# -- file contents ------------------------------------------------------------------------------------------------

def test_a_suite_yaml_in_utf16_is_one_line(isolated_env, capsys):
    suite = isolated_env / "u16.yaml"
    suite.write_text("name: x\nentries:\n  - task: fsc\n    datasets: [mini_coop]\n", encoding="utf-16")
    code, lines = cli(capsys, "run", "-b", "resnet", "--suite", str(suite))
    assert_one_line(code, lines, str(suite), "is not UTF-8 text")


@pytest.mark.parametrize("body, says", [
    ("a: " + "[" * 100_000, "nested too deeply"),
    ("name: [unclosed\n", "malformed YAML"),
])
def test_a_malformed_suite_yaml_is_one_line(isolated_env, capsys, body, says):
    suite = isolated_env / "bad.yaml"
    suite.write_text(body)
    code, lines = cli(capsys, "run", "-b", "resnet", "--suite", str(suite))
    assert_one_line(code, lines, str(suite), says)


def test_a_split_json_nested_200000_deep_is_one_line(isolated_env, capsys):
    from harness.catalog import DATASETS

    cls = DATASETS.get("caltech101")
    folder = isolated_env / "data" / cls.folder
    folder.mkdir(parents=True)
    (folder / cls.split_file).write_text("[" * 200_000 + "]" * 200_000)
    code, lines = cli(capsys, "data", "verify", "caltech101")
    assert_one_line(code, lines, cls.split_file, "not valid JSON (nested too deeply)")


def test_a_fewshot_split_json_nested_deep_is_one_line(tmp_path):
    from harness.errors import DataMissingError
    from tasks.fsc.sampling import fewshot_path, load_or_create_fewshot

    path = fewshot_path(tmp_path, "ds", "fp", 1, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(DataMissingError, match="malformed few-shot split file .*recursion") as err:
        load_or_create_fewshot("ds", "fp", [], [], 1, 1, tmp_path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("content, says", [
    (bytes(range(256)) * 8, "is not a readable leaderboard CSV"),
    (b"", "is not a readable leaderboard CSV"),
    (b"backbone,task,task_version,dataset,setting,metric,mean\nr,fsc,1,d,,acc,oops\n",
     "column 'mean' holds a non-number on data row 1"),
])
def test_a_csv_compare_cannot_read_is_one_line(isolated_env, capsys, content, says):
    bad = isolated_env / "bad.csv"
    bad.write_bytes(content)
    code, lines = cli(capsys, "compare", str(bad), str(bad))
    assert_one_line(code, lines, str(bad), says)


# -- output -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    ["run", "-b", "resnet", "--variant", "tiny"],
    ["sweep", "-b", "vermouth", "--param", "t=1"],
    ["leaderboard"],
    ["profile", "-b", "resnet"],
])
@pytest.mark.parametrize("where", ["a-file", "a-file/sub"])
def test_an_out_dir_that_is_a_file_fails_before_any_job(isolated_env, capsys, command, where):
    (isolated_env / "a-file").write_text("not a folder")
    code, lines = cli(capsys, *command, "--out-dir", where)
    assert_one_line(code, lines, f"--out-dir {where}", "is a file, not a folder")
    assert nothing_ran(isolated_env / "home")


# -- suites, protocols and options (issue 16, point 6) ------------------------------------------------------------

@pytest.mark.parametrize("protocol, says", [
    ("{epochs: 100000000000}", "'epochs': Input should be less than or equal to 10000"),
    ("{train_batch_size: 0}", "'train_batch_size': Input should be greater than or equal to 1"),
])
def test_protocol_bounds_come_from_the_protocol_model(isolated_env, capsys, protocol, says):
    suite = isolated_env / "e.yaml"
    suite.write_text(f"name: e\nvariant: tiny\nentries:\n  - task: sbir\n    datasets: [mini_sbir]\n"
                     f"    protocol: {protocol}\n")
    code, lines = cli(capsys, "run", "-b", "resnet", "--suite", str(suite))
    assert_one_line(code, lines, "suite 'e'", says)
    assert nothing_ran(isolated_env / "home")


@pytest.mark.parametrize("override, says", [
    ("epochs=100000000000", "'epochs': Input should be less than or equal to 10000"),
    ("iterations=100000000000", "'iterations': Input should be less than or equal to 1000000"),
])
def test_protocol_bounds_hold_for_set_too(isolated_env, capsys, override, says):
    code, lines = cli(capsys, "run", "-b", "resnet", "--set", override)
    assert_one_line(code, lines, says)


def test_protocol_models_carry_the_bounds():
    from harness.catalog import TASKS

    bounded = {("fsc", "epochs"), ("fsc", "train_batch_size"), ("fsc", "max_iter"), ("sbir", "epochs"),
               ("sbir", "train_batch_size"), ("ovss", "iterations"), ("ovss", "batch_size")}
    for task, field in bounded:
        metadata = TASKS.get(task).protocol_model.model_fields[field].metadata
        assert any(getattr(m, "le", None) for m in metadata), (task, field)


def test_an_unknown_suite_variant_is_an_error_listing_the_known_ones(isolated_env, capsys):
    suite = isolated_env / "g.yaml"
    suite.write_text("name: g\nvariant: gigantic\nentries:\n  - task: fsc\n    datasets: [mini_coop]\n")
    code, lines = cli(capsys, "run", "-b", "resnet", "--suite", str(suite))
    assert_one_line(code, lines, "'gigantic'", "resnet50", "tiny")


@pytest.mark.parametrize("args, says", [
    (["run", "-b", "resnet", "--opt", "garbage"], "--opt expects KEY=VALUE, got 'garbage'"),
    (["run", "-b", "resnet", "--set", "garbage"], "--set expects KEY=VALUE, got 'garbage'"),
    (["extract", "-b", "resnet", "--dataset", "mini_coop", "--opt", "garbage"], "--opt expects KEY=VALUE"),
    (["run", "-b", "resnet", "--suite", "/nonexistent.yaml"], "suite file not found: /nonexistent.yaml"),
    (["run", "-b", "resnet", "--suite", "missing.yml"], "suite file not found: missing.yml"),
    (["run", "-b", "resnet", "--suite", "sub/suite"], "suite file not found: sub/suite"),
    (["run", "-b", "resnet", "--suite", "minj"], "unknown suite 'minj'; did you mean: mini?"),
    (["profile", "-b", "resnet", "--variant", "gigantic"], "unknown variant of backbone 'resnet' 'gigantic'"),
])
def test_options_are_named_in_their_errors(isolated_env, capsys, args, says):
    code, lines = cli(capsys, *args)
    assert_one_line(code, lines, says)


# -- Ctrl-C and the unexpected ------------------------------------------------------------------------------------

def test_ctrl_c_says_what_finished_and_how_to_resume(isolated_env, capsys, monkeypatch):
    import typer

    import harness.track.records
    import harness.track.tracking
    from harness import cli as cli_module
    from harness.config import RunConfig

    jobs = [types.SimpleNamespace(key=f"k{i}") for i in range(12)]
    done = {"k0", "k4", "k7"}

    class FakeTracker:
        def __init__(self, suite: str):
            pass

        def invocation(self, params):
            import contextlib

            return contextlib.nullcontext()

    class FakeExecutor:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def preflight(self, jobs):
            pass

        def run(self, jobs, tracker, resume=True):
            raise KeyboardInterrupt

    monkeypatch.setattr(harness.track.tracking, "Tracker", FakeTracker)
    monkeypatch.setattr(harness.track.records.RecordStore, "exists", lambda self, key: key in done)
    cfg = RunConfig(suite="s", backbones=["resnet"])
    with pytest.raises(typer.Exit) as exit_:
        cli_module._execute("s", cfg, jobs, isolated_env / "lb", FakeExecutor(), {})
    assert exit_.value.exit_code == 130
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["interrupted: 3 of 12 job(s) finished (their records are kept); rerun the same command to "
                     "resume"]


def test_an_unexpected_exception_is_one_line_with_a_log_of_the_traceback(isolated_env, capsys, monkeypatch):
    import harness.plan.suites

    def boom(name, *_):  # `run` also passes --limit
        raise RuntimeError("disk on fire\nsecond line [bold]")

    monkeypatch.setattr(harness.plan.suites, "load_suite", boom)
    code, lines = cli(capsys, "run", "-b", "resnet")
    line = assert_one_line(code, lines, "error: RuntimeError: disk on fire second line [bold]")
    assert code == 1
    log = Path(re.search(r"\(traceback in (.+)\)$", line).group(1))
    assert log.parent == isolated_env / "home" / "logs"
    text = log.read_text()
    assert text.startswith("harness run -b resnet") and "Traceback" in text and "in boom" in text


def test_the_traceback_log_falls_back_to_the_temp_folder(isolated_env, capsys, monkeypatch):
    import harness.plan.suites

    home = isolated_env / "home-is-a-file"
    home.write_text("")
    monkeypatch.setenv("HARNESS_HOME", str(home))
    monkeypatch.setattr(harness.plan.suites, "load_suite", lambda name, *_: 1 / 0)
    code, lines = cli(capsys, "run", "-b", "resnet")
    line = assert_one_line(code, lines, "error: ZeroDivisionError: division by zero (traceback in ")
    log = Path(re.search(r"\(traceback in (.+)\)$", line).group(1))
    assert log.is_file() and "ZeroDivisionError" in log.read_text()
    log.unlink()


def test_a_harness_error_prints_its_message_only_markup_and_all(isolated_env, capsys, monkeypatch):
    import harness.plan.suites
    from harness.errors import ConfigError

    def refuse(name, *_):
        raise ConfigError("bad value [red]x[/red] in s.yaml")

    monkeypatch.setattr(harness.plan.suites, "load_suite", refuse)
    code, lines = cli(capsys, "run", "-b", "resnet")
    assert code == 2 and lines == ["error: bad value [red]x[/red] in s.yaml"]
    assert not (isolated_env / "home" / "logs").exists()


def test_a_home_where_records_cannot_be_written_stops_before_any_job(isolated_env, capsys):
    home = isolated_env / "home"
    home.mkdir()
    (home / "records").write_text("not a folder")  # the records cannot land: found out before any work
    code, lines = cli(capsys, "run", "-b", "resnet", "--variant", "tiny")
    assert_one_line(code, lines, str(home / "records"), "HARNESS_HOME")
    assert not (home / "mlflow.db").exists()
