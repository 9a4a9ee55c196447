"""``zoo device``: run the Android demo app's benchmark over adb, or import a results file from any
device (an iPhone, a board, another computer) into the results store.

``zoo device android ARTIFACT``: pushes the exported artifact, its manifest.json and the benchmark
images to ``/sdcard/Android/data/org.restorationzoo.demo/files/bench/<run id>/`` with adb, starts
the demo's ``BenchmarkActivity``, waits for ``results.json`` (or ``error.txt``), pulls it, checks
it against the results schema and the artifact's sha256, and stores it like ``zoo device import``.
The contract with the app is docs/device.md. Every adb call goes through an injectable runner
(:class:`Adb`), so tests check the exact command lines; it has not been run against a real phone
by the zoo's authors (see docs/device.md).

``zoo device import FILE... [--store DIR]``: validates each file (a :class:`ZooError` names the
first bad field; records must be of zoo models and export targets) and copies it atomically into
the store (default ``<results>/devices`` with ``<results>`` = ``$ZOO_RESULTS`` or ``results``),
named ``<host>_<model>_<sha256 prefix>.json``; nothing is stored when any file is refused.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from measure.measured import (SHA_PREFIX, artifact_key, artifact_label, input_text, quantization_label, results_root,
                              runtime_label)
from zoo.errors import ZooError

__all__ = ["PACKAGE", "ACTIVITY", "DEVICE_ROOT", "RunResult", "subprocess_runner", "Adb", "find_adb",
           "run_android", "record_problems", "read_importable", "import_results", "store_name", "summary_lines",
           "main"]

#: Android application id of android_demo and its benchmark activity (am start -n form).
PACKAGE = "org.restorationzoo.demo"
ACTIVITY = f"{PACKAGE}/.BenchmarkActivity"
#: Where runs go on the phone: the app's external files folder, readable and writable by adb.
DEVICE_ROOT = f"/sdcard/Android/data/{PACKAGE}/files/bench"
RESULTS_NAME = "results.json"
ERROR_NAME = "error.txt"
_ADB_FIX = "check the USB cable and `adb devices` (the phone must be unlocked with USB debugging allowed)"


@dataclass
class RunResult:
    """What one command returned (the fields of ``subprocess.CompletedProcess`` the zoo uses)."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


#: A runner executes an argv list with a timeout (seconds) and returns a :class:`RunResult`.
Runner = Callable[[Sequence[str], float], RunResult]


def subprocess_runner(argv: Sequence[str], timeout: float) -> RunResult:
    """Run ``argv`` (no shell) and capture its text output; a timeout becomes a :class:`ZooError`."""
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ZooError(f"`{shlex.join(argv)}` did not return within {timeout:g} s", _ADB_FIX) from None
    except OSError as err:
        raise ZooError(f"cannot run {argv[0]} ({err})", "install Android SDK platform-tools or set $ADB") from None
    return RunResult(done.returncode, done.stdout, done.stderr)


def find_adb(explicit: str | None = None) -> str:
    """The adb executable: ``explicit`` (``--adb``), else ``$ADB``, else ``adb`` on PATH."""
    name = explicit or os.environ.get("ADB") or "adb"
    found = shutil.which(name)
    if found is None:
        raise ZooError(f"adb not found ({name!r} is not an executable on PATH)",
                       "install Android SDK platform-tools (https://developer.android.com/tools/releases/platform-tools)"
                       " and put them on PATH, or set $ADB (or --adb) to the adb executable")
    return found


@dataclass
class Adb:
    """adb command lines for one phone; ``runner`` executes them (a fake one in tests).

    ``serial`` is set by :meth:`select_device`; every later command passes ``-s SERIAL``.
    ``calls`` records each argv list run, in order.
    """

    executable: str = "adb"
    runner: Runner = subprocess_runner
    serial: str | None = None
    timeout: float = 120.0
    calls: list[list[str]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [self.executable] + (["-s", self.serial] if self.serial else []) + list(args)

    def run(self, *args: str, check: bool = True) -> RunResult:
        argv = self.argv(*args)
        self.calls.append(argv)
        result = self.runner(argv, self.timeout)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ZooError(f"`{shlex.join(argv)}` failed (exit {result.returncode}"
                           + (f": {detail[-1]}" if detail else "") + ")", _ADB_FIX)
        return result

    def shell(self, *args: str, check: bool = True) -> RunResult:
        return self.run("shell", *args, check=check)

    def select_device(self, serial: str | None = None) -> str:
        """Parse ``adb devices``; keep ``serial`` or the only device. ZooError when none is ready,
        the phone is unauthorized/offline, or several are connected without ``serial``."""
        self.serial = None
        states = {}
        for line in self.run("devices").stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not line.startswith(("*", "List of devices")):
                states[parts[0]] = parts[1]
        if serial is not None and serial not in states:
            raise ZooError(f"adb does not see device {serial!r} (it sees: {', '.join(states) or 'none'})",
                           "check --serial against `adb devices`")
        if serial is None:
            if not states:
                raise ZooError("adb sees no device", "connect the phone by USB, enable USB debugging in Developer "
                               "options and accept this computer's key; `adb devices` must list it")
            if len(states) > 1:
                raise ZooError(f"adb sees {len(states)} devices ({', '.join(states)})", "pick one with --serial SERIAL")
            serial = next(iter(states))
        if states[serial] != "device":
            fix = {"unauthorized": "unlock the phone and accept the USB debugging prompt",
                   "offline": "reconnect the cable or run `adb kill-server`"}.get(states[serial], _ADB_FIX)
            raise ZooError(f"device {serial} is {states[serial]}", fix)
        self.serial = serial
        return serial

    def require_app(self) -> None:
        """ZooError unless the demo app is installed on the selected device."""
        listed = self.shell("pm", "list", "packages", PACKAGE).stdout.split()
        if f"package:{PACKAGE}" not in listed:
            raise ZooError(f"the demo app {PACKAGE} is not installed on {self.serial}",
                           "build and install android_demo with `./gradlew installDebug` (in android_demo/)")

    def listing(self, folder: str) -> list[str]:
        """File names in a device folder (empty when it does not exist yet)."""
        return self.shell("ls", folder, check=False).stdout.split()


def _run_id(sha256: str) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{sha256[:8]}"


def _benchmark_images(images: Sequence[str | Path] | None, workdir: Path) -> list[Path]:
    """8-bit RGB PNG files to push: ``images`` (files or folders), else the bundled demo photos;
    anything else (JPEG, 16-bit, alpha, grey) is converted to an 8-bit RGB PNG in ``workdir``."""
    from zoo.data.datasets import image_files

    if images:
        files = []
        for path in map(Path, images):
            if path.is_dir():
                files += image_files(path)
            elif path.is_file():
                files.append(path)
            else:
                raise ZooError(f"benchmark image {path} does not exist", "pass image files or folders to --images")
    else:
        from zoo.data.bundled import bundled_photos

        files = [photo.path for photo in bundled_photos()]
    if not files:
        raise ZooError("no benchmark images found", "pass PNG/JPEG files or folders to --images")
    pngs, names = [], set()
    for file in files:
        if file.stem in names:
            raise ZooError(f"two benchmark images are called {file.stem}", "rename one (results are keyed by name)")
        names.add(file.stem)
        pngs.append(file if _is_rgb8_png(file) else _as_rgb8_png(file, workdir))
    return pngs


def _is_rgb8_png(path: Path) -> bool:
    """Whether ``path`` is already what the app reads (an 8-bit RGB PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            return opened.format == "PNG" and opened.mode == "RGB"
    except OSError:  # not an image: _as_rgb8_png names the file
        return False


def _as_rgb8_png(path: Path, workdir: Path) -> Path:
    from zoo.data.io import read_image, write_image

    return write_image(workdir / f"{path.stem}.png", read_image(path).image, bit_depth=8)


def run_android(artifact: str | Path, *, adb: Adb, serial: str | None = None,
                images: Sequence[str | Path] | None = None, runs: int = 20, warmup: int = 3,
                timeout: float = 600.0, poll: float = 2.0, store: str | Path | None = None,
                keep_on_device: bool = False, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> Path:
    """Run the demo's benchmark on a phone and store its results; returns the stored file.

    ``artifact``: an export folder (or the artifact / manifest.json in it); its sha256 is checked
    against the manifest first. ``runs``/``warmup``: timed and untimed forward passes per the app's
    benchmark; ``timeout``/``poll``: seconds to wait for the app and between checks. The run folder
    on the phone is removed afterwards unless ``keep_on_device`` (or the app failed).
    """
    from tqdm import tqdm

    from export_mobile.runners import verify_artifact

    if runs < 1 or warmup < 0:
        raise ZooError("--runs must be >= 1 and --warmup >= 0", "pass e.g. --runs 20 --warmup 3")
    manifest, artifact_file = verify_artifact(artifact)
    _store_folder(store)  # before the phone is asked for anything
    if artifact_file.is_dir():
        raise ZooError(f"{artifact_file.name} is a folder ({manifest['target']}); the Android demo runs "
                       "ExecuTorch .pte, LiteRT .tflite or ONNX files", "export for an Android target")
    manifest_file = artifact_file.parent / "manifest.json"
    sha256 = manifest["artifact"]["sha256"]
    serial = adb.select_device(serial)
    adb.require_app()
    folder = f"{DEVICE_ROOT}/{_run_id(sha256)}"
    with tempfile.TemporaryDirectory(prefix="zoo-device-") as tmp:
        work = Path(tmp)
        pngs = _benchmark_images(images, work)
        adb.shell("mkdir", "-p", f"{folder}/images")
        uploads = [(artifact_file, f"{folder}/{artifact_file.name}"), (manifest_file, f"{folder}/manifest.json")]
        uploads += [(png, f"{folder}/images/{png.stem}.png") for png in pngs]
        for local, remote in tqdm(uploads, desc=f"adb push to {serial}", unit="file"):
            adb.run("push", str(local), remote)
        started = adb.shell("am", "start", "-W", "-n", ACTIVITY, "--es", "dir", folder, "--ei", "runs", str(runs),
                            "--ei", "warmup", str(warmup), "--es", "results", RESULTS_NAME)
        if "Error" in started.stdout or "Error" in started.stderr:
            raise ZooError(f"cannot start {ACTIVITY}: {(started.stdout + started.stderr).strip().splitlines()[-1]}",
                           "reinstall an android_demo that has BenchmarkActivity (`./gradlew installDebug`)")
        deadline = clock() + timeout
        while True:
            present = adb.listing(folder)
            if RESULTS_NAME in present or ERROR_NAME in present:
                break
            if clock() >= deadline:
                raise ZooError(f"the benchmark on {serial} wrote neither {RESULTS_NAME} nor {ERROR_NAME} in "
                               f"{timeout:g} s ({folder})", "keep the phone unlocked, raise --timeout, and look at "
                               "`adb logcat -s ZooBenchmark`")
            sleep(poll)
        if RESULTS_NAME not in present:
            message = adb.shell("cat", f"{folder}/{ERROR_NAME}", check=False).stdout.strip() or "(empty error.txt)"
            raise ZooError(f"the demo app failed on {serial}: {message}",
                           f"fix the cause; the run folder {folder} is left on the phone for inspection")
        local = work / RESULTS_NAME
        adb.run("pull", f"{folder}/{RESULTS_NAME}", str(local))
        # Checked whole before the run folder on the phone is removed: refused results stay there.
        try:
            doc = read_importable(local)
        except ZooError as err:  # named as the file on the phone, not the temporary copy
            raise ZooError(err.problem.replace(str(local), f"{serial}:{folder}/{RESULTS_NAME}"),
                           f"{err.fix}; the run folder is left on the phone") from None
        for index, record in enumerate(doc["records"]):
            ran = (record.get("artifact") or {}).get("sha256")
            if ran != sha256:
                raise ZooError(f"the phone's results (records[{index}].artifact.sha256 = {str(ran)[:SHA_PREFIX]}...) "
                               f"are not for {artifact_file.name} ({sha256[:SHA_PREFIX]}...)",
                               f"the app ran another file; check {folder} on the phone")
        if not keep_on_device:
            adb.shell("rm", "-rf", folder, check=False)
        return import_results(local, store=store)[0]


def store_name(doc: dict) -> str:
    """``<host>_<model>_<sha256 prefix>.json`` of a results document's first record (``pytorch``
    instead of the prefix for PyTorch records), reduced to safe file-name characters."""
    record = doc["records"][0]
    digest = (record.get("artifact") or {}).get("sha256", record["runtime"]["name"])[:SHA_PREFIX]
    name = "_".join([record["host"]["name"], record["model"], digest])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") + ".json"


def record_problems(doc: dict) -> list[str]:
    """What the results schema cannot see but the store must not take: each record's ``model`` is a
    zoo model (``zoo list``), its ``task`` and ``scale`` (when given) are that model's, and its
    ``artifact.target`` is an export target (or ``pt2e-<recipe>``, a .pt2 that zoo check ran).
    Returns ``"records[i].field: ..."`` lines, empty when the document is fine."""
    from export_mobile.targets import target_names
    from measure.pt2e import TARGET_PREFIX
    from zoo.registry import get_card

    problems = []
    targets = target_names()
    for index, record in enumerate(doc["records"]):
        field = f"records[{index}]"
        try:
            card = get_card(record["model"])
        except ZooError:
            problems.append(f"{field}.model: {record['model']!r} is not a zoo model (zoo list shows them)")
            continue
        if record.get("task") is not None and record["task"] != card.task:
            problems.append(f"{field}.task: {record['task']!r}, but {card.name} is a {card.task} model")
        if record.get("scale") is not None and record["scale"] != card.scale:
            problems.append(f"{field}.scale: {record['scale']}, but {card.name} upscales x{card.scale}")
        target = (record.get("artifact") or {}).get("target")
        if target is not None and target not in targets and not target.startswith(TARGET_PREFIX):
            problems.append(f"{field}.artifact.target: {target!r} is not an export target "
                            f"({', '.join(targets)})")
    return problems


def read_importable(path: str | Path) -> dict:
    """Read results file ``path`` for the store: valid against the schema
    (:func:`measure.results.read_results`) and of zoo models and export targets
    (:func:`record_problems`); :class:`ZooError` naming the file and the first bad field."""
    from measure.results import read_results

    doc = read_results(path)
    problems = record_problems(doc)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ZooError(f"{path} cannot go into the results store: field {problems[0]}{more}",
                       "import the results of an artifact that zoo export made from a zoo model "
                       "(the app copies model, task and target from its manifest.json)")
    return doc


def _store_folder(store: str | Path | None) -> Path:
    """The results store folder (default ``<results root>/devices``), checked to be writable."""
    from zoo.atomic import ensure_writable

    return ensure_writable(Path(store) if store else results_root() / "devices", "results store", kind="folder",
                           fix="pass another --store folder")


def import_results(path: str | Path, *, store: str | Path | None = None) -> list[Path]:
    """Validate results file ``path`` (:func:`read_importable`) and copy it into ``store``
    (default ``<results root>/devices``), atomically; returns ``[stored path]``. A file already
    stored unchanged is not copied again; a different file of the same host, model and artifact
    gets the document's creation time appended."""
    from zoo.atomic import atomic_path

    path = Path(path)
    doc = read_importable(path)
    folder = _store_folder(store)
    target = folder / store_name(doc)
    data = path.read_bytes()
    if target.is_file() and target.read_bytes() != data:
        stamp = re.sub(r"[^0-9TZ]", "", doc.get("created") or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()))
        target = target.with_name(f"{target.stem}_{stamp}.json")
    if not (target.is_file() and target.read_bytes() == data):
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
    return [target]


def summary_lines(doc: dict) -> list[str]:
    """One line per record: kind, host, model, artifact, runtime, latency, accuracy and, for a
    quantized artifact, how it was quantized (the record's ``artifact.quantization``, as the report
    labels it)."""
    lines = []
    for record in doc["records"]:
        host = record["host"]
        where = " ".join(filter(None, [host["name"], host.get("os"), host.get("os_version")]))
        line = f"{record['kind']} on {where}: {record['model']} {artifact_label(record)}, {runtime_label(record)}"
        latency = record.get("latency_ms")
        if latency:
            line += (f", median {latency['median']:.2f} ms per {latency.get('per') or 'forward'} at "
                     f"{input_text(record)} ({latency['runs']} runs)")
        if record.get("images"):
            line += f", {len(record['images'])} images"
        if record.get("accuracy"):
            line += f", PSNR {record['accuracy']['psnr']:.2f} dB on {record['accuracy']['dataset']}"
        # This record's own provenance only: the report also looks at other records of the artifact.
        provenance = (record.get("artifact") or {}).get("quantization")
        label = quantization_label(record, {(record["model"], artifact_key(record)): provenance} if provenance else {})
        if label != "—":
            line += f"; quantized: {label}"
        lines.append(line)
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo device", description="Benchmark an artifact on an Android phone "
                                     "with the demo app (adb), or import a results file from any device.")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("android", help="push ARTIFACT and images, run the demo's benchmark, pull and store results")
    p.add_argument("artifact", help="export folder written by `zoo export` (or the artifact in it)")
    p.add_argument("--images", nargs="+", help="benchmark images or folders (default: the bundled demo photos)")
    p.add_argument("--runs", type=int, default=20, help="timed forward passes (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed warm-up passes (default 3)")
    p.add_argument("--serial", help="adb serial of the phone (needed when several are connected)")
    p.add_argument("--adb", help="adb executable (default: $ADB, else adb on PATH)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the app (default 600)")
    p.add_argument("--keep-on-device", action="store_true", help="leave the run folder on the phone")
    p.add_argument("--store", type=Path, help="results store folder (default: $ZOO_RESULTS/devices or results/devices)")
    p = sub.add_parser("import", help="validate results files from a phone (or anything else) and store them")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--store", type=Path, help="results store folder (default: $ZOO_RESULTS/devices or results/devices)")
    return parser


def main(argv: Sequence[str] | None = None, *, runner: Runner | None = None) -> int:
    """``zoo device``: returns the exit status; ``runner`` replaces the subprocess adb runner (tests)."""
    from measure.results import read_results

    args = build_parser().parse_args(argv)
    if args.action == "import":
        # Every file is checked, and the store, before the first is stored: a bad file among good
        # ones stores nothing (the fix, then the same command again, stores them all once).
        for file in args.files:
            read_importable(file)
        _store_folder(args.store)
        stored = [(file, import_results(file, store=args.store)[0]) for file in args.files]
    else:
        adb = Adb(find_adb(args.adb), runner or subprocess_runner)
        stored = [(Path(args.artifact), run_android(args.artifact, adb=adb, serial=args.serial, images=args.images,
                                                    runs=args.runs, warmup=args.warmup, timeout=args.timeout,
                                                    store=args.store, keep_on_device=args.keep_on_device))]
    for source, target in stored:
        print(f"{source} -> {target}")
        for line in summary_lines(read_results(target)):
            print(f"  {line}")
    return 0
