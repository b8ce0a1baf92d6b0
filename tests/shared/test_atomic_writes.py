"""Result files are written beside their final name and renamed: a full disk or a kill mid-write leaves the last
whole file (or none), never a truncated one."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

from continuous_training.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "include" / "continuous_training"
# Writes that are no stage result: the model's files staged in a temporary folder and logged to MLflow, and the
# demo's landing files (written beside and renamed by the function itself).
NOT_RESULTS = {("model/pyfunc.py", "log_pyfunc_model"), ("demo.py", "_write_if_changed")}


def in_place_writes(path: Path, root: Path) -> list[str]:
    """`file:line function` of every write_text/write_bytes/json.dump/open(..., "w") call outside paths.py."""
    found = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if isinstance(child, ast.Call):
                callee = child.func
                called = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
                mode = child.args[1].value if (called == "open" and len(child.args) > 1
                                               and isinstance(child.args[1], ast.Constant)) else ""
                if called in {"write_text", "write_bytes", "dump"} or any(flag in str(mode) for flag in "wa"):
                    where = str(path.relative_to(root))
                    if (where, function) not in NOT_RESULTS:
                        found.append(f"{where}:{child.lineno} {function}")
            visit(child, name)

    visit(ast.parse(path.read_text()), "")
    return found


def test_every_result_file_is_written_beside_and_renamed():
    writes = [write for path in sorted(PACKAGE.rglob("*.py")) if path.name != "paths.py"
              for write in in_place_writes(path, PACKAGE)]
    writes += [f"jobs/{write}" for path in sorted((PROJECT_ROOT / "jobs").glob("*.py"))
               for write in in_place_writes(path, PROJECT_ROOT / "jobs")]
    assert writes == [], "written in place (truncate, then write): use paths.write_result or paths.write_text_atomic"


def test_a_full_disk_while_rewriting_a_report_keeps_the_last_whole_one(tmp_path):
    report = tmp_path / "report.html"
    report.write_text("<p>the last whole report</p>")
    # A file size limit makes the write fail as a full disk does, part way through the file.
    script = textwrap.dedent(f"""
        import resource, signal
        from pathlib import Path
        from continuous_training.paths import write_text_atomic
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
        try:
            write_text_atomic(Path({str(report)!r}), "<p>" + "x" * 100_000 + "</p>")
        except OSError as error:
            print("refused:", error.strerror)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)

    assert done.stdout.startswith("refused: File too large"), done.stdout + done.stderr
    assert report.read_text() == "<p>the last whole report</p>"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.html"]
