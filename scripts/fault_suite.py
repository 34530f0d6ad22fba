"""Replay issue 13's and issue 25's bad inputs (and issue 12's `--device gpu`, `--batch-size -1`)
through the `distar` CLI and count how each one ends: a traceback, a clear error (exit 2), or a wrong
acceptance (exit 0 where the input must be refused, e.g. `alpha_rew = nan`).

    .venv/bin/python scripts/fault_suite.py            # all cases; a table and the counts
    .venv/bin/python scripts/fault_suite.py -k sqlite  # only cases whose name contains 'sqlite'

Runs in one process with typer's CliRunner (the CLI's own code path, minus the interpreter
start-up per case), offline, in a temp folder; tiny models are built once in $DISTAR_CACHE
(default: a folder under /tmp kept between runs). Several minutes on 2 cores (it trains a tiny
SDXL run and generates a few tiny images to damage).
A "clear error" here means: exit code 2, no traceback, and the message printed as given (no
rich markup error). Whether the message names the file is checked by the tests
(tests/test_faults_*.py), case by case.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DISTAR_CACHE", str(Path(tempfile.gettempdir()) / "distar-fault-suite-cache"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from typer.testing import CliRunner  # noqa: E402

from distar.cli import app  # noqa: E402

EVAL = ["eval", "--model", "tiny_sdxl", "--bench", "tiny", "--limit", "2"]


def _pickle_bomb(path: Path, marker: Path) -> None:
    """A pickle whose unpickling would create `marker` (a planted malicious file)."""
    import pickle

    class Bomb:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"weight": Bomb()}))


class Suite:
    def __init__(self, root: Path):
        self.root = root
        self._made: set[str] = set()

    # Healthy artefacts, built once and copied per case -------------------------------------
    def _made_once(self, name: str, args: list) -> Path:
        """root/name written by `distar ARGS --out root/name`, the first time it is asked for."""
        d = self.root / name
        if name not in self._made:
            r = self.invoke(args + ["--out", d])
            assert r.exit_code == 0, r.output
            self._made.add(name)
        return d

    def invoke(self, args, env=None):
        return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=True)

    def good_store(self) -> Path:
        return self._made_once("good-eval", EVAL)

    def toy_run(self) -> Path:
        return self._made_once("good-toy", ["train", "--preset", "gmm/di_star_in", "--max-steps", "2"])

    def sd_run(self) -> Path:
        return self._made_once("good-sd", ["train", "--preset", "tiny_sdxl", "--max-steps", "2"])

    def copy(self, src: Path, name: str) -> Path:
        dst = self.root / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        return dst

    def tiny_pipeline(self, name: str) -> Path:
        from evalsuite.models.architectures import tiny_pipeline_dir
        return self.copy(tiny_pipeline_dir("sdxl"), name)

    def out(self, name: str) -> Path:
        d = self.root / name
        shutil.rmtree(d, ignore_errors=True)
        return d

    def config(self, name: str, text: str) -> Path:
        p = self.root / name
        p.write_text(text)
        return p

    # The cases: name -> (argv, env) -------------------------------------------------------
    def cases(self):
        r = self.root

        def index_case(name, content):
            def make():
                d = self.tiny_pipeline(name)
                (d / "model_index.json").write_text(content)
                return ["eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                        "--out", self.out(name + "-out")], None
            return make

        yield "model_index.json corrupt", index_case("mi-corrupt", "{not json")
        yield "model_index.json no _class_name", index_case("mi-noclass", '{"unet": ["diffusers", "UNet2DConditionModel"]}')
        yield "model_index.json list _class_name", index_case("mi-listclass", '{"_class_name": ["a", "b"]}')
        yield "eval --batch-size -1", lambda: (EVAL + ["--batch-size", "-1", "--out", self.out("bs-neg")], None)
        yield "eval --batch-size 10^12", lambda: (EVAL + ["--batch-size", str(10**12), "--out", self.out("bs-huge")], None)
        yield "eval --skip-generation on an empty store", lambda: (
            EVAL + ["--skip-generation", "--out", self.out("skip-empty")], None)
        yield "eval --device tpu9", lambda: (EVAL + ["--device", "tpu9", "--out", self.out("dev-tpu")], None)
        yield "eval --device gpu", lambda: (EVAL + ["--device", "gpu", "--out", self.out("dev-gpu")], None)

        def store_case(name, damage, cmd):
            def make():
                d = self.copy(self.good_store(), name)
                for extra in ("results.sqlite-wal", "results.sqlite-shm"):
                    (d / extra).unlink(missing_ok=True)
                p = d / "results.sqlite"
                damage(p)
                if cmd == "eval":
                    return EVAL + ["--out", d], None
                return ["leaderboard", "--results", d, "--out", self.out(name + "-lb")], None
            return make

        def truncate(p):
            data = p.read_bytes()
            p.write_bytes(data[: len(data) // 3])

        def garbage(p):
            p.write_bytes(b"this is not a database\n" * 100)

        yield "results.sqlite truncated (eval)", store_case("db-trunc-eval", truncate, "eval")
        yield "results.sqlite garbage (eval)", store_case("db-garbage-eval", garbage, "eval")
        yield "results.sqlite truncated (leaderboard)", store_case("db-trunc-lb", truncate, "leaderboard")
        yield "results.sqlite garbage (leaderboard)", store_case("db-garbage-lb", garbage, "leaderboard")
        yield "results.sqlite garbage (gallery)", lambda: (
            ["gallery", "--bench", "tiny", "--results", store_case("db-garbage-gal", garbage, "eval")()[0][-1],
             "--out", self.out("gal-out")], None)
        def foreign(p):
            import sqlite3
            p.unlink()
            con = sqlite3.connect(p)
            con.execute("CREATE TABLE runs (id INTEGER, km REAL)")
            con.commit()
            con.close()

        def future(p):
            import sqlite3
            con = sqlite3.connect(p)
            con.execute("PRAGMA user_version = 99")
            con.commit()
            con.close()

        def foreign_wal(p):
            import sqlite3
            other = p.with_name("other.db")
            con = sqlite3.connect(other)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA wal_autocheckpoint=0")
            with con:
                con.execute("CREATE TABLE accounts (id INTEGER)")
            shutil.copyfile(other.with_name("other.db-wal"), p.with_name(p.name + "-wal"))
            con.close()

        for what, damage in (("another application's", foreign), ("future-version", future),
                             ("stale foreign -wal beside", foreign_wal)):
            for cmd in ("eval", "leaderboard"):
                yield f"results.sqlite {what} ({cmd})", store_case(f"db-{damage.__name__}-{cmd}", damage, cmd)
        yield "leaderboard on a missing store", lambda: (
            ["leaderboard", "--results", r / "no-such-dir", "--out", self.out("lb-missing")], None)

        def blocked_out(name):
            blocker = r / f"{name}-file"
            blocker.write_text("")
            return blocker / "sub"

        yield "train --out not writable", lambda: (
            ["train", "--preset", "gmm/di_star_in", "--max-steps", "1", "--out", blocked_out("ro-train")], None)
        yield "eval --out not writable", lambda: (EVAL + ["--out", blocked_out("ro-eval")], None)

        def ckpt_case(name, kind, damage):
            def make():
                src = self.toy_run() if kind == "toy" else self.sd_run()
                d = self.copy(src, name)
                damage(d)
                preset = "gmm/di_star_in" if kind == "toy" else "tiny_sdxl"
                return ["train", "--preset", preset, "--max-steps", "3", "--out", d], None
            return make

        def corrupt_latest(d):
            (d / "latest.json").write_text("{oops")

        def dangling_latest(d):
            (d / "latest.json").write_text(json.dumps({"step": 99, "name": "ckpt-0000099"}))

        def truncate_ckpt(d):
            name = json.loads((d / "latest.json").read_text())["name"]
            f = d / f"{name}.safetensors"
            if not f.exists():  # the SD trainer: one folder per checkpoint
                f = d / name / "generator.safetensors"
            f.write_bytes(f.read_bytes()[:200])

        def corrupt_config(d):
            (d / "config.json").write_text("[1, 2")

        for kind in ("toy", "sd"):
            yield f"{kind} train: latest.json corrupt", ckpt_case(f"{kind}-latest-corrupt", kind, corrupt_latest)
            yield f"{kind} train: latest.json -> missing checkpoint", ckpt_case(f"{kind}-latest-dangling", kind, dangling_latest)
            yield f"{kind} train: checkpoint truncated", ckpt_case(f"{kind}-ckpt-trunc", kind, truncate_ckpt)
            yield f"{kind} train: config.json corrupt", ckpt_case(f"{kind}-config-corrupt", kind, corrupt_config)

        def train_cfg(name, text, suffix=".toml", preset="gmm/di_star_in"):
            def make():
                p = self.config(name + suffix, text)
                return ["train", "--preset", preset, "--config", p, "--max-steps", "2",
                        "--out", self.out(name)], None
            return make

        yield "config world.eval_samples = -5", train_cfg("cfg-evalneg", "[world]\neval_samples = -5\n")
        yield "config optim.batch_size = 10^12", train_cfg("cfg-bshuge", "[optim]\nbatch_size = 1000000000000\n")
        yield "config JSON list", train_cfg("cfg-list", "[1, 2, 3]", ".json")
        yield "config TOML garbage", train_cfg("cfg-garbage", "[optim\nlr_g = ", ".toml")
        for key, section in (("alpha_rew", "objective"), ("huber_c", "objective"), ("lr_g", "optim"),
                             ("beta1", "optim"), ("ema", "run"), ("sigma_std", "objective")):
            yield f"config {section}.{key} = nan (TOML)", train_cfg(f"cfg-nan-{key}", f"[{section}]\n{key} = nan\n")
        yield "config optim.lr_g = inf (TOML)", train_cfg("cfg-inf-lr", "[optim]\nlr_g = inf\n")
        yield "config objective.alpha_rew = NaN (JSON)", train_cfg(
            "cfg-nan-json", '{"objective": {"alpha_rew": NaN}}', ".json")
        yield "config objective.alpha_cfg = -inf (JSON)", train_cfg(
            "cfg-ninf-json", '{"objective": {"alpha_cfg": -Infinity, "guidance": "in"}}', ".json")

        # Planted malicious files: each loader must refuse without running them.
        marker = r / "PWNED"

        def text_encoder_bomb():
            d = self.tiny_pipeline("bomb-te")
            for f in (d / "text_encoder").glob("*.safetensors"):
                f.unlink()
            _pickle_bomb(d / "text_encoder" / "pytorch_model.bin", marker)
            return ["eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                    "--out", self.out("bomb-te-out")], None

        def pickscore_bomb():
            d = r / "bomb-pickscore"
            d.mkdir(exist_ok=True)
            (d / "config.json").write_text(json.dumps({"model_type": "clip"}))
            _pickle_bomb(d / "pytorch_model.bin", marker)
            return EVAL + ["--metrics", "pickscore", "--out", self.copy(self.good_store(), "bomb-ps-out")], \
                {"DISTAR_PICKSCORE_PATH": str(d), "DISTAR_PICKSCORE_PROCESSOR_PATH": str(d)}

        def inception_bomb():
            f = r / "bomb-inception" / "pt_inception-2015-12-05-6726825d.pth"
            _pickle_bomb(f, marker)
            return EVAL + ["--metrics", "fid", "--out", self.copy(self.good_store(), "bomb-inc-out")], \
                {"DISTAR_INCEPTION_PATH": str(f)}

        yield "malicious text-encoder .bin in path: pipeline", text_encoder_bomb
        yield "malicious PickScore weights", pickscore_bomb
        yield "malicious Inception weights", inception_bomb

        # Issue 25: confinement, numbers from every source, prompt files, weights, store names.
        def linked_images():
            d, away = self.out("link-img"), self.out("link-img-target")
            d.mkdir()
            away.mkdir()
            (d / "images").symlink_to(away)
            return EVAL + ["--out", d], None

        def linked_lock():
            d = self.out("link-lock")
            d.mkdir()
            (d / ".distar.lock").symlink_to(self.config("link-lock-target.txt", "keep"))
            return EVAL + ["--out", d], None

        yield "eval: images/ is a symlink out of --out", linked_images
        yield "eval: .distar.lock is a symlink", linked_lock
        yield "eval --out ''", lambda: (EVAL + ["--out", ""], None)
        yield "leaderboard --results ''", lambda: (["leaderboard", "--results", "", "--out", self.out("lb-empty")], None)
        yield "eval --out is a file", lambda: (EVAL + ["--out", self.config("out-is-file", "x")], None)
        yield "eval --json is a directory", lambda: (EVAL + ["--out", self.out("json-dir"), "--json", r], None)
        for preset in ("../../escaped", "/tmp/abs-preset", "a//b"):
            yield f"config preset = {preset!r}", train_cfg(
                f"cfg-preset-{abs(hash(preset)) % 1000}", json.dumps({"preset": preset}), ".json")
        for flag, value in (("--guidance", "nan"), ("--guidance", "inf"), ("--guidance", "-1"),
                            ("--steps", "0"), ("--steps", "100000"), ("--resolution", "1000000"),
                            ("--resolution", "63"), ("--images-per-prompt", "0"), ("--limit", "0")):
            yield f"eval {flag} {value}", lambda f=flag, v=value: (
                EVAL + [f, v, "--out", self.out(f"num{f}{v}")], None)
        for value in ("abc", "nan", "-5", "inf"):
            yield f"DISTAR_PROGRESS_EVERY={value}", lambda v=value: (
                EVAL + ["--out", self.out(f"prog-{v}")], {"DISTAR_PROGRESS_EVERY": v})

        def recipe_case(name, recipe):
            def make():
                d = self.tiny_pipeline(name)
                (d / "distar_recipe.json").write_text(recipe)
                return ["eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                        "--out", self.out(name + "-out")], None
            return make

        for what, recipe in (("steps -3", '{"steps": -3}'), ("guidance NaN", '{"guidance": NaN}'),
                             ("dtype float7", '{"dtype": "float7"}'), ("resolution 10^6", '{"resolution": 1000000}'),
                             ("timesteps [-1]", '{"timesteps": [-1]}'), ("steps '4'", '{"steps": "4"}'),
                             ("a list", "[1, 2]")):
            yield f"distar_recipe.json {what}", recipe_case(f"rec-{abs(hash(what)) % 1000}", recipe)

        def unet_case(name, damage):
            def make():
                import torch
                from safetensors.torch import load_file, save_file
                d = self.tiny_pipeline(name)
                f = next((d / "unet").glob("*.safetensors"))
                sd = load_file(str(f))
                save_file(damage(sd, torch), str(f))
                return ["eval", "--model", f"path:{d}", "--bench", "tiny", "--limit", "1",
                        "--out", self.out(name + "-out")], None
            return make

        first = lambda sd: sorted(sd)[0]  # noqa: E731
        yield "path: UNet weights int8", unet_case("w-int8", lambda sd, t: {k: v.to(t.int8) for k, v in sd.items()})
        yield "path: UNet weights all NaN", unet_case("w-nan", lambda sd, t: {k: v * float("nan") for k, v in sd.items()})
        yield "path: UNet missing one key", unet_case("w-missing", lambda sd, t: {k: v for k, v in sd.items() if k != first(sd)})
        yield "path: UNet with a foreign key", unet_case("w-extra", lambda sd, t: {**sd, "foreign.weight": t.zeros(1)})

        def prompt_case(name, data: bytes, suffix=".txt"):
            def make():
                f = r / f"{name}{suffix}"
                f.write_bytes(data)
                return EVAL[:3] + ["--bench", f"file:{f}", "--out", self.out(name + "-out")], None
            return make

        yield "prompt file with a NUL byte", prompt_case("p-nul", b"a red cube\nblue\x00sphere\n")
        yield "prompt file with a terminal escape", prompt_case("p-esc", b"a \x1b[31mred\x1b[0m cube\n")
        yield "prompt .tsv with a NUL in a category", prompt_case("p-tsvnul", b"Prompt\tCategory\nred\tA\x00\n", ".tsv")
        yield "prompt file not UTF-8", prompt_case("p-latin1", "caf\u00e9\n".encode("latin-1"))
        yield "prompt file empty", prompt_case("p-empty", b"")
        yield "prompt .tsv header only", prompt_case("p-header", b"Prompt\tCategory\n", ".tsv")
        yield "prompt file is a directory", lambda: (EVAL[:3] + ["--bench", f"file:{r}", "--out", self.out("p-dir")], None)
        yield "prompt file is /dev/null", lambda: (EVAL[:3] + ["--bench", "file:/dev/null", "--out", self.out("p-dev")], None)

        def fifo():
            f = r / "p-fifo.txt"
            if not f.exists():
                os.mkfifo(f)
            return EVAL[:3] + ["--bench", f"file:{f}", "--out", self.out("p-fifo-out")], None

        yield "prompt file is a FIFO", fifo
        yield "gallery on another application's store", lambda: (
            ["gallery", "--bench", "tiny", "--results", store_case("db-foreign-gal", foreign, "eval")()[0][-1],
             "--out", self.out("gal-foreign")], None)
        yield "eval --repair-store on another application's store", lambda: (
            store_case("db-foreign-repair", foreign, "eval")()[0] + ["--repair-store"], None)

        # User text that looks like rich markup must print verbatim.
        yield "message containing [/x] (model path)", lambda: (
            ["eval", "--model", "path:/nonexistent/[/x]", "--bench", "tiny", "--out", self.out("markup1")], None)
        yield "message containing [optim] (config key)", train_cfg("cfg-markup", "[optim]\n\"[optim]\" = 1\n")
        yield "message containing [/x] (bench file)", lambda: (
            ["eval", "--model", "tiny_sdxl", "--bench", "file:/nonexistent/[/x].txt", "--out", self.out("markup2")], None)


def classify(result, marker: Path) -> tuple[str, str]:
    out = result.output or ""
    exc = result.exception
    if marker.exists():
        marker.unlink()
        return "EXECUTED", "a planted pickle ran"
    if exc is not None and not isinstance(exc, SystemExit):
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).strip().splitlines()
        return "TRACEBACK", f"{type(exc).__name__}: {str(exc).splitlines()[0][:110] if str(exc) else ''}" \
            if tb else type(exc).__name__
    if "MarkupError" in out or "Traceback" in out:
        return "TRACEBACK", out.strip().splitlines()[-1][:120]
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    first_err = next((ln for ln in lines if "error" in ln.lower()), lines[-1] if lines else "")
    if result.exit_code == 0:
        return "ACCEPTED", "exit 0: the bad input was not refused"
    if result.exit_code == 2:
        return "CLEAR", first_err.strip()[:140]
    return f"EXIT{result.exit_code}", first_err.strip()[:140]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="distar-faults-"))
    suite = Suite(root)
    marker = root / "PWNED"
    counts: dict[str, int] = {}
    rows = []
    try:
        for name, make in suite.cases():
            if args.k and args.k.lower() not in name.lower():
                continue
            try:
                argv, env = make()
            except Exception as e:  # noqa: BLE001 - a broken set-up is reported, not fatal
                rows.append((name, "SETUP", f"{type(e).__name__}: {str(e)[:100]}"))
                counts["SETUP"] = counts.get("SETUP", 0) + 1
                continue
            result = suite.invoke(argv, env=env)
            kind, msg = classify(result, marker)
            counts[kind] = counts.get(kind, 0) + 1
            rows.append((name, kind, msg))
            print(f"{kind:10s} {name:48s} {msg}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("cases:", len(rows), " ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return 0 if set(counts) <= {"CLEAR"} else 1


if __name__ == "__main__":
    sys.exit(main())
