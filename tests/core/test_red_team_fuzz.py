"""Seeded fuzzing of what enters the harness (options, suite files, environment, weights, CSVs): every input is
either accepted or refused in ONE line with exit 2, never a traceback or an unexpected-error exit (1).

The generator is seeded (`SEED`), so a failing input is reproduced by its case id. Accepted inputs stop at
`--dry-run` (planning only). The explicit cases of issue 16 live in test_one_line_errors.py,
test_archives.py, test_corrupt_records.py, test_tracking_failures.py and test_cache_failures.py; this file
covers the space around them.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.cli import main

SEED = 20261202
N_PER_KIND = 12


@dataclass
class Case:
    id: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # written under the test's folder before the run


def _junk(rng: random.Random) -> str:
    """A value a user (or a script gone wrong) might pass where a number or a name belongs."""
    pool = [str(rng.randint(-10**12, 10**12)), str(rng.uniform(-1e9, 1e9)), "", " ", "nan", "inf", "-0", "1e400",
            "0x1f", "1,,2", "３", "١٢", "None", "[1]", "{}", "'5'", "5 5", "\x00", "\u202e12", "9" * 400,
            "".join(rng.choices(string.printable, k=rng.randint(1, 20)))]
    return rng.choice(pool)


def _suite_bytes(rng: random.Random) -> bytes:
    """A suite file: random bytes, another encoding, deep nesting, or the right keys with wrong values."""
    entry = {"task": "fsc", "datasets": ["mini_coop"],
             "protocol": {"epochs": 1, "text_space": "clip:tiny"}, "grid": {"head": ["linear-probe"], "shots": [1]}}
    good = {"name": "fuzz", "variant": "tiny", "device": "cpu", "batch_size": 8, "entries": [entry]}
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 300))
    if kind == 1:
        return yaml.safe_dump(good).encode(rng.choice(["utf-16", "utf-32", "cp500"]))
    if kind == 2:
        depth = rng.choice([100, 5_000, 60_000])
        return b"name: fuzz\nentries: " + b"[" * depth + b"]" * depth + b"\n"
    bad = yaml.safe_load(yaml.safe_dump(good))
    target = rng.choice(["name", "variant", "device", "batch_size", "entries", "seeds"])
    if kind == 3:
        bad[target] = rng.choice([_junk(rng), -3, 0, 10**15, [], {}, None, True, [[1]], 1.5])
    elif kind == 4:
        bad["entries"][0][rng.choice(["task", "datasets", "protocol", "grid"])] = rng.choice(
            [_junk(rng), 7, None, [], {"x": 1}])
    else:
        bad["entries"][0]["protocol"][rng.choice(["epochs", "lr", "train_batch_size", "shots", "zzz"])] = rng.choice(
            [_junk(rng), -1, 0, 10**11, 1e308, None, [1, 2]])
    return yaml.safe_dump(bad, allow_unicode=True).encode()


def _weights_bytes(rng: random.Random) -> tuple[str, bytes]:
    name = rng.choice(["w.safetensors", "w.bin", "w.pt", "w.pth", "w.ckpt", "w"])
    body = rng.randbytes(rng.randint(0, 200))
    prefix = rng.choice([b"", b"PK\x03\x04", b"\x80\x02", rng.randint(0, 2**40).to_bytes(8, "little"),
                         (len(body)).to_bytes(8, "little") + b"{"])
    return name, prefix + body


def hostile_inputs(seed: int = SEED, n: int = N_PER_KIND) -> Iterator[Case]:
    rng = random.Random(seed)
    base = ["run", "-b", "resnet", "--variant", "tiny", "--suite", "suite.yaml", "--dry-run"]
    good_suite = yaml.safe_dump(
        {"name": "fuzz", "variant": "tiny", "device": "cpu", "batch_size": 8,
         "entries": [{"task": "fsc", "datasets": ["mini_coop"], "protocol": {"epochs": 1, "text_space": "clip:tiny"},
                      "grid": {"head": ["linear-probe"], "shots": [1]}}]}).encode()
    for i in range(n):
        yield Case(f"batch-size-{i}", [*base, "--batch-size", _junk(rng)], files={"suite.yaml": good_suite})
        yield Case(f"seeds-{i}", [*base, "--seeds", _junk(rng)], files={"suite.yaml": good_suite})
        yield Case(f"set-{i}", [*base, "--set", f"{rng.choice(['epochs', 'lr', 'shots', 'seed', 'x'])}={_junk(rng)}"],
                   files={"suite.yaml": good_suite})
        yield Case(f"opt-{i}", [*base, "--opt", _junk(rng)], files={"suite.yaml": good_suite})
        yield Case(f"device-{i}", [*base, "--device", _junk(rng)], files={"suite.yaml": good_suite})
        yield Case(f"budget-{i}", base, env={"HARNESS_CACHE_BUDGET_GB": _junk(rng)}, files={"suite.yaml": good_suite})
        yield Case(f"suite-file-{i}", base, files={"suite.yaml": _suite_bytes(rng)})
        name, data = _weights_bytes(rng)
        yield Case(f"weights-{i}", [*base, "--weights", name], files={"suite.yaml": good_suite, name: data})
        yield Case(f"compare-{i}", ["compare", "a.csv", "b.csv"],
                   files={"a.csv": rng.randbytes(rng.randint(0, 120)), "b.csv": b"backbone,column,mean\nx,y,1\n"})


CASES = list(hostile_inputs())


def test_the_generator_is_seeded_and_covers_every_kind():
    assert [c.id for c in hostile_inputs()] == [c.id for c in CASES]
    assert [c.files for c in hostile_inputs()] == [c.files for c in CASES]
    assert len(CASES) == 9 * N_PER_KIND


def test_every_hostile_input_is_accepted_or_refused_in_one_line(isolated_env, capsys, monkeypatch):
    outcomes: dict[str, int] = {"accepted": 0, "clear error": 0}
    accepted: list[str] = []
    for case in CASES:
        folder = isolated_env / case.id
        folder.mkdir()
        monkeypatch.chdir(folder)
        for name, data in case.files.items():
            Path(name).write_bytes(data)
        with monkeypatch.context() as env:
            for key, value in case.env.items():
                env.setenv(key, value.replace("\x00", ""))  # the environment cannot hold a NUL
            try:
                main([a.replace("\x00", "") for a in case.argv])
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code in (0, 2), (case.id, case.argv, err[-2000:])  # 1 = an unexpected exception
        assert "Traceback" not in err, (case.id, err[-2000:])
        if code == 2:
            errors = [line for line in lines if line.startswith("error:")]
            assert len(errors) == 1, (case.id, lines)
            outcomes["clear error"] += 1
        else:
            outcomes["accepted"] += 1
            accepted.append(case.id)
    print(f"\n{len(CASES)} fuzzed inputs: {outcomes}; accepted: {', '.join(accepted)}")
    assert outcomes["clear error"] > len(CASES) // 2  # the generator mostly makes bad inputs
