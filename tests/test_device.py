"""zoo device (export_mobile/device.py): the adb command lines of `zoo device android` against a
fake adb (an injected runner, and once a fake `adb` executable on PATH), its errors, and
`zoo device import`. No phone needed; nothing here has run against a real phone."""

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from measure import device as dv
from export_mobile.manifest import sha256_of
from zoo.errors import ZooError

GOLDEN = Path(__file__).parent / "data" / "results"
MANIFEST = Path(__file__).parent / "data" / "manifests" / "executorch-xnnpack-int8.json"
ARTIFACT = "hinet-lite_executorch-xnnpack_int8_256x256.pte"
SERIAL = "R5CT1234ABC"


@pytest.fixture
def export_dir(tmp_path):
    """An export folder whose manifest matches its (fake) artifact's sha256."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / ARTIFACT).write_bytes(b"not really a program, but the sha256 is checked")
    manifest = json.loads(MANIFEST.read_text())
    digest, method, size = sha256_of(folder / ARTIFACT)
    manifest["artifact"].update(sha256=digest, sha256_method=method, bytes=size)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(folder / "a.png")
    Image.new("RGB", (6, 8), (30, 20, 10)).save(folder / "b.jpg")  # converted to PNG before the push
    Image.new("RGBA", (4, 4), (1, 2, 3, 128)).save(folder / "c.png")  # converted to 8-bit RGB
    return folder


def _phone_results(export_dir: Path, sha256: str | None = None) -> str:
    """What the app would write: the golden Android record for this export's artifact."""
    doc = json.loads((GOLDEN / "android-executorch-xnnpack-int8.json").read_text())
    manifest = json.loads((export_dir / "manifest.json").read_text())
    doc["records"][0]["artifact"]["sha256"] = sha256 or manifest["artifact"]["sha256"]
    return json.dumps(doc)


class FakePhone:
    """A runner answering adb command lines like a phone with the demo app installed."""

    def __init__(self, results: str | None = None, *, devices=f"{SERIAL}\tdevice", installed=True,
                 error: str | None = None, finish_after: int = 1, started: str = "Status: ok\n"):
        self.results, self.devices, self.installed, self.error = results, devices, installed, error
        self.started = started
        self.finish_after = finish_after
        self.listings = 0

    def __call__(self, argv, timeout):
        args = list(argv[3:]) if argv[1:2] == ["-s"] else list(argv[1:])
        if args == ["devices"]:
            return dv.RunResult(0, f"List of devices attached\n{self.devices}\n\n")
        if args[:4] == ["shell", "pm", "list", "packages"]:
            return dv.RunResult(0, f"package:{dv.PACKAGE}\n" if self.installed else "")
        if args[:2] == ["shell", "ls"]:
            self.listings += 1
            done = self.listings > self.finish_after
            files = "manifest.json images " + ARTIFACT
            if done:
                files += " error.txt" if self.error else " results.json"
            return dv.RunResult(0, files.replace(" ", "\n"))
        if args[:2] == ["shell", "cat"]:
            return dv.RunResult(0, self.error + "\n")
        if args[0] == "pull":
            Path(args[2]).write_text(self.results)
        return dv.RunResult(0, self.started if args[:3] == ["shell", "am", "start"] else "")


def _run(export_dir, phone, tmp_path, **kwargs):
    adb = dv.Adb("adb", phone)
    kwargs.setdefault("images", [tmp_path / "images"])
    stored = dv.run_android(export_dir, adb=adb, store=tmp_path / "store", poll=0, sleep=lambda s: None, **kwargs)
    return adb, stored


def test_android_run_issues_these_adb_commands(export_dir, images, tmp_path):
    adb, stored = _run(export_dir, FakePhone(_phone_results(export_dir)), tmp_path, runs=7, warmup=2)
    folder = adb.calls[2][-1].removesuffix("/images")
    assert folder.startswith("/sdcard/Android/data/org.restorationzoo.demo/files/bench/")
    run_id = folder.rsplit("/", 1)[1]
    assert run_id.endswith("-" + json.loads((export_dir / "manifest.json").read_text())["artifact"]["sha256"][:8])
    s = ["adb", "-s", SERIAL]
    pushed = [call for call in adb.calls if call[3:4] == ["push"]]
    (pulled,) = [call[5] for call in adb.calls if call[3:4] == ["pull"]]  # a temporary local file
    assert adb.calls == [
        ["adb", "devices"],
        s + ["shell", "pm", "list", "packages", "org.restorationzoo.demo"],
        s + ["shell", "mkdir", "-p", f"{folder}/images"],
        s + ["push", str(export_dir / ARTIFACT), f"{folder}/{ARTIFACT}"],
        s + ["push", str(export_dir / "manifest.json"), f"{folder}/manifest.json"],
        *pushed[2:],
        s + ["shell", "am", "start", "-W", "-n", "org.restorationzoo.demo/.BenchmarkActivity", "--es", "dir", folder,
             "--ei", "runs", "7", "--ei", "warmup", "2", "--es", "results", "results.json"],
        s + ["shell", "ls", folder],
        s + ["shell", "ls", folder],
        s + ["pull", f"{folder}/results.json", pulled],
        s + ["shell", "rm", "-rf", folder],
    ]
    assert [(Path(call[4]).name, call[5]) for call in pushed[2:]] == [
        ("a.png", f"{folder}/images/a.png"), ("b.png", f"{folder}/images/b.png"), ("c.png", f"{folder}/images/c.png")]
    assert [Path(call[4]).parent == images for call in pushed[2:]] == [True, False, False]
    assert Path(pulled).name == "results.json" and not Path(pulled).exists()  # removed with its temporary folder
    assert stored.parent == tmp_path / "store" and stored.name.startswith("Pixel-8_hinet-lite_")
    assert json.loads(stored.read_text())["records"][0]["host"]["name"] == "Pixel 8"


def test_serial_picks_one_of_several_devices(export_dir, images, tmp_path):
    phone = FakePhone(_phone_results(export_dir), devices=f"emulator-5554\tdevice\n{SERIAL}\tdevice")
    with pytest.raises(ZooError, match="--serial"):
        _run(export_dir, phone, tmp_path)
    adb, _ = _run(export_dir, phone, tmp_path, serial=SERIAL, keep_on_device=True)
    assert all(call[1:3] == ["-s", SERIAL] for call in adb.calls[1:])
    assert adb.calls[-1][3] == "pull"  # --keep-on-device: no rm


@pytest.mark.parametrize("phone, message", [
    (FakePhone(devices=""), "adb sees no device"),
    (FakePhone(devices=f"{SERIAL}\tunauthorized"), "accept the USB debugging prompt"),
    (FakePhone(installed=False), r"not installed on R5CT1234ABC; build and install android_demo with "
                                 r"`\./gradlew installDebug`"),
    (FakePhone(error="cannot load program: XNNPACK delegate missing"),
     "the demo app failed on R5CT1234ABC: cannot load program: XNNPACK delegate missing"),
    (FakePhone(started="Error type 3\nError: Activity class {org.restorationzoo.demo/"
                       "org.restorationzoo.demo.BenchmarkActivity} does not exist.\n"),
     r"cannot start org.restorationzoo.demo/.BenchmarkActivity: Error: Activity class .* does not exist"),
], ids=["no-device", "unauthorized", "app-not-installed", "app-error", "no-benchmark-activity"])
def test_android_errors_name_the_fix(export_dir, images, tmp_path, phone, message):
    with pytest.raises(ZooError, match=message):
        _run(export_dir, phone, tmp_path)
    assert not (tmp_path / "store").exists()


def test_timeout_when_the_app_never_answers(export_dir, images, tmp_path):
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(ZooError, match=r"wrote neither results.json nor error.txt in 30 s"):
        _run(export_dir, FakePhone(finish_after=10**6), tmp_path, timeout=30, clock=lambda: next(ticks))


def test_results_for_another_artifact_are_refused(export_dir, images, tmp_path):
    with pytest.raises(ZooError, match=r"records\[0\]\.artifact\.sha256 = 000000000000"):
        _run(export_dir, FakePhone(_phone_results(export_dir, sha256="0" * 64)), tmp_path)


def test_invalid_phone_results_name_the_field(export_dir, images, tmp_path):
    doc = json.loads(_phone_results(export_dir))
    doc["records"][0]["latency_ms"]["median"] = -3
    with pytest.raises(ZooError, match=r"records\[0\]\.latency_ms\.median"):
        _run(export_dir, FakePhone(json.dumps(doc)), tmp_path)


def test_missing_adb_names_platform_tools(export_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ADB", raising=False)
    with pytest.raises(ZooError, match=r"platform-tools.*\$ADB"):
        dv.main(["android", str(export_dir)])


def test_fake_adb_executable_on_path(export_dir, images, monkeypatch, tmp_path, capsys):
    """The real subprocess runner against a fake `adb` script: same protocol, logged argv."""
    phone_dir = tmp_path / "phone"
    phone_dir.mkdir()
    (phone_dir / "results.json").write_text(_phone_results(export_dir))
    log = tmp_path / "adb.log"
    script = tmp_path / "bin" / "adb"
    script.parent.mkdir()
    script.write_text(f"""#!{sys.executable}
import json, shutil, sys
args = sys.argv[1:]
with open({str(log)!r}, "a") as handle:
    handle.write(json.dumps(args) + "\\n")
if args[:2] == ["-s", {SERIAL!r}]:
    args = args[2:]
if args == ["devices"]:
    print("* daemon not running; starting now at tcp:5037")
    print("List of devices attached")
    print({SERIAL!r} + "\\tdevice")
elif args[:4] == ["shell", "pm", "list", "packages"]:
    print("package:org.restorationzoo.demo")
elif args[:2] == ["shell", "ls"]:
    print("results.json")
elif args[0] == "pull":
    shutil.copy({str(phone_dir / "results.json")!r}, args[2])
elif args[:3] == ["shell", "am", "start"]:
    print("Starting: Intent {{ cmp=org.restorationzoo.demo/.BenchmarkActivity (has extras) }}")
    print("Status: ok")
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ADB", raising=False)
    assert dv.main(["android", str(export_dir), "--images", str(images), "--runs", "3", "--warmup", "1",
                    "--store", str(tmp_path / "store")]) == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[0] == ["devices"]
    assert ["-s", SERIAL, "shell", "am", "start", "-W", "-n", "org.restorationzoo.demo/.BenchmarkActivity"] \
        == calls[-4][:8]
    out = capsys.readouterr().out
    assert "device on Pixel 8 Android 14: hinet-lite executorch-xnnpack int8" in out
    assert "median 41.70 ms per tile at 256x256 (50 runs), 2 images" in out


def test_import_stores_the_file_once(tmp_path, capsys):
    source = GOLDEN / "ios-coreml-fp16.json"
    store = tmp_path / "store"
    assert dv.main(["import", str(source), "--store", str(store)]) == 0
    (stored,) = store.iterdir()
    doc = json.loads(source.read_text())
    record = doc["records"][0]
    assert stored.name == f"iPhone15-2_hinet-lite_{record['artifact']['sha256'][:12]}.json"
    assert stored.read_bytes() == source.read_bytes()
    assert "device on iPhone15,2 iOS" in capsys.readouterr().out
    dv.main(["import", str(source), "--store", str(store)])  # same file again: nothing new
    assert len(list(store.iterdir())) == 1
    doc["created"] = "2026-12-01T10:00:00Z"  # another run of the same artifact on the same phone
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    dv.main(["import", str(other), "--store", str(store)])
    assert sorted(p.name for p in store.iterdir())[1] == stored.stem + "_20261201T100000Z.json"


def test_import_keeps_the_phone_provenance_and_the_report_shows_it(tmp_path, capsys):
    """A phone's results file carrying the manifest's provenance record (``artifact.quantization``,
    as the demo apps copy it) keeps it through `zoo device import`, and the import summary and the
    report's phone rows (best artifact, latency, device runs) say how the artifact was quantized; the
    same file from an app that did not copy it reads unknown."""
    from measure import measured as ms
    from measure import report as rp
    from quantize.provenance import UNKNOWN, provenance_label

    source = GOLDEN / "android-executorch-xnnpack-int8.json"
    doc = json.loads(source.read_text())
    provenance = doc["records"][0]["artifact"]["quantization"]
    assert provenance == json.loads(MANIFEST.read_text())["quantization"]["provenance"]  # what the app copies
    known = provenance_label(provenance)
    assert known == "PTQ xnnpack, all int8; ranges from 32 crops of urban100 (gaussian:25)"
    del doc["records"][0]["artifact"]["quantization"]
    older_app = tmp_path / "older-app.json"
    older_app.write_text(json.dumps(doc))
    for path, label in ((source, known), (older_app, UNKNOWN)):
        store = tmp_path / f"store-{path.stem}"
        assert dv.main(["import", str(path), "--store", str(store)]) == 0
        (stored,) = store.iterdir()
        assert stored.read_bytes() == path.read_bytes()  # stored as the phone wrote it
        assert f"; quantized: {label}" in capsys.readouterr().out
        loaded, _ = ms.load_results([store])
        tables = {table.id: table for section in rp.build_report(loaded).sections for table in section.tables}
        for table_id in ("summary", "latency-table", "device-table"):
            (row,) = tables[table_id].rows
            assert row[tables[table_id].columns.index("quantization")] == label, table_id


def test_import_default_store_follows_zoo_results(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_RESULTS", str(tmp_path / "res"))
    (stored,) = dv.import_results(GOLDEN / "android-executorch-xnnpack-int8.json")
    assert stored.parent == tmp_path / "res" / "devices"


def test_import_refuses_an_invalid_file_naming_the_field(tmp_path):
    with pytest.raises(ZooError, match=r"records\[0\]\.latency_ms\.median"):
        dv.main(["import", str(GOLDEN / "invalid" / "negative-median.json"), "--store", str(tmp_path)])
    assert list(tmp_path.iterdir()) == []


def _golden_with(tmp_path: Path, name: str, change) -> Path:
    """The golden Android results file with ``change(record)`` applied, written as ``name``."""
    doc = json.loads((GOLDEN / "android-executorch-xnnpack-int8.json").read_text())
    change(doc["records"][0])
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _cli(argv) -> int:
    from zoo_cli.main import main

    return main(argv)


@pytest.mark.parametrize("change, words", [
    (lambda r: r.update(model="nope-model"), "field records[0].model: 'nope-model' is not a zoo model"),
    (lambda r: r.update(task="super-resolution"),
     "field records[0].task: 'super-resolution', but hinet-lite is a denoise model"),
    (lambda r: r.update(scale=2), "field records[0].scale: 2, but hinet-lite upscales x1"),
    (lambda r: r["artifact"].update(target="executorch-nope"),
     "field records[0].artifact.target: 'executorch-nope' is not an export target (executorch-xnnpack, "),
], ids=["unknown-model", "task-of-another-model", "scale-of-another-model", "unknown-target"])
def test_import_refuses_results_of_a_model_or_target_the_zoo_does_not_have(tmp_path, capsys, change, words):
    """Before: stored as Pixel-8_nope-model_....json, exit 0; `zoo report` then showed a model no
    card has. Now nothing of the command is stored when one of its files is refused."""
    bad = _golden_with(tmp_path, "bad.json", change)
    store = tmp_path / "store"
    assert _cli(["device", "import", str(GOLDEN / "ios-coreml-fp16.json"), str(bad), "--store", str(store)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"zoo: error: {bad} cannot go into the results store: {words}") and "\n" not in err, err
    assert not store.exists()  # the good file given first was not stored either


def test_import_takes_a_pt2e_record_and_refuses_a_store_that_is_a_file(tmp_path, capsys):
    pt2e = _golden_with(tmp_path, "pt2e.json", lambda r: r["artifact"].update(target="pt2e-xnnpack"))
    assert _cli(["device", "import", str(pt2e), "--store", str(tmp_path / "store")]) == 0
    capsys.readouterr()
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    assert _cli(["device", "import", str(pt2e), "--store", str(blocker)]) == 2
    assert capsys.readouterr().err.strip() == (f"zoo: error: cannot write results store {blocker}: it exists and is "
                                               "not a folder; pass another --store folder")


def test_refused_phone_results_stay_on_the_phone(export_dir, images, tmp_path):
    """Before: the app's results.json of an unknown model was pulled into a temporary folder, the
    run folder on the phone removed, and only then refused: the phone's measurement was gone."""
    doc = json.loads(_phone_results(export_dir))
    doc["records"][0]["model"] = "nope-model"
    phone = FakePhone(json.dumps(doc))
    adb = dv.Adb("adb", phone)
    with pytest.raises(ZooError, match=r"^R5CT1234ABC:/sdcard/Android/data/org\.restorationzoo\.demo/files/bench/"
                                       r".*/results\.json cannot go into the results store: field records\[0\]\.model"
                                       r".*; the run folder is left on the phone$"):
        dv.run_android(export_dir, adb=adb, store=tmp_path / "store", images=[images], poll=0, sleep=lambda s: None)
    assert not any(call[3:6] == ["shell", "rm", "-rf"] for call in adb.calls)
    assert not (tmp_path / "store").exists()
