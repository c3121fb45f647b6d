"""Progress and logs of a build: for a person on a terminal, for programs as JSON-seq, or nothing.

The builder calls the same methods on every monitor; each decides what to show.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import IO, Any

RS = "\x1e"  # RFC 7464 record separator


def short_id(object_id: str | None) -> str:
    return (object_id or "-")[:12]


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Monitor:
    """Receives build events. The base class ignores them (quiet)."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout

    def begin(self, total_stages: int, total_pipelines: int = 0) -> None: ...

    def pipeline_start(self, name: str, object_id: str | None, stages: int) -> None: ...

    def stage_start(self, index: int, pipeline: str, stage: str, object_id: str) -> None: ...

    def stage_output(self, line: str) -> None: ...

    def stage_end(self, index: int, pipeline: str, stage: str, object_id: str, status: str,
                  duration: float, changes: dict[str, Any] | None = None, output: str = "") -> None: ...

    def stage_failed(self, pipeline: str, stage: str, object_id: str, returncode: int, tail: list[str]) -> None: ...

    def sources_progress(self, done: int, total: int, bytes_done: int, bytes_total: int, rate: float) -> None: ...

    def log(self, message: str) -> None: ...


class QuietMonitor(Monitor):
    """Shows nothing."""


class LogMonitor(Monitor):
    """One line per stage, `[k/n] pipeline/stage  id  built|cached  duration`, its output indented under it."""

    def __init__(self, out: IO[str] | None = None) -> None:
        super().__init__(out)
        self.total = 0
        self._tty = bool(getattr(self.out, "isatty", lambda: False)())
        self._open_line = False
        self._last_sources = 0.0

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def _end_open_line(self) -> None:
        if self._open_line:
            self._write("\n")
            self._open_line = False

    def begin(self, total_stages: int, total_pipelines: int = 0) -> None:
        self.total = total_stages

    def _head(self, index: int, pipeline: str, stage: str, object_id: str) -> str:
        return f"[{index}/{self.total}] {pipeline}/{stage}  {short_id(object_id)}"

    def stage_start(self, index: int, pipeline: str, stage: str, object_id: str) -> None:
        self._end_open_line()
        head = self._head(index, pipeline, stage, object_id) + "  building"
        if self._tty:
            self._write(head)
            self._open_line = True
        else:
            self._write(head + "\n")

    def stage_output(self, line: str) -> None:
        self._end_open_line()
        self._write("    " + line + "\n")

    def stage_end(self, index: int, pipeline: str, stage: str, object_id: str, status: str,
                  duration: float, changes: dict[str, Any] | None = None, output: str = "") -> None:
        line = f"{self._head(index, pipeline, stage, object_id)}  {status}  {duration:.1f}s"
        if changes:
            line += f"  {changes_summary(changes)}"
        if self._open_line:
            self._write("\r\033[K" + line + "\n")
            self._open_line = False
        else:
            self._write(line + "\n")

    def stage_failed(self, pipeline: str, stage: str, object_id: str, returncode: int, tail: list[str]) -> None:
        self._end_open_line()
        self._write(f"{pipeline}/{stage} {short_id(object_id)} failed with exit status {returncode}\n")

    def sources_progress(self, done: int, total: int, bytes_done: int, bytes_total: int, rate: float) -> None:
        now = time.monotonic()
        finished = done == total
        if not finished and now - self._last_sources < (0.2 if self._tty else 5.0):
            return
        self._last_sources = now
        line = (f"sources: {done}/{total} files, {human_size(bytes_done)} of {human_size(bytes_total)}"
                f", {human_size(rate)}/s")
        if self._tty:
            self._write("\r\033[K" + line + ("\n" if finished else ""))
            self._open_line = not finished
        else:
            self._write(line + "\n")

    def log(self, message: str) -> None:
        self._end_open_line()
        self._write(message + "\n")


def changes_summary(changes: dict[str, Any]) -> str:
    """`+added -removed ~changed, size` from a change record."""
    return (f"+{changes.get('added', 0)} -{changes.get('removed', 0)} ~{changes.get('changed', 0)}"
            f" {human_size(changes.get('bytes', 0))}")


class JSONSeqMonitor(Monitor):
    """RFC 7464 JSON text sequences, one record per event, for programs that render progress.

    Records carry osbuild's `context` (origin; pipeline name and id; stage name and id, with an
    `id` of the context itself) and `progress` (pipelines done of all, with the stages of the
    current pipeline nested as `progress`), so tools that read osbuild's progress read ours.
    Our additions: `type` (begin, pipeline-start, stage-start, log, stage-end, sources) and,
    in a stage's `result`, `status`, `duration` and `changes`.
    """

    ENGINE = "osbuild.monitor"      # the origin of the engine's own messages
    MODULE = "org.osbuild"          # the origin of what a module printed

    def __init__(self, out: IO[str] | None = None) -> None:
        super().__init__(out)
        self.total = 0
        self.pipelines_total = 0
        self.pipelines_done = -1
        self.pipeline: dict[str, Any] = {"name": None, "id": None}
        self.stages_total = 0
        self.stages_done = 0
        self.stage: dict[str, Any] = {"name": None, "id": None}

    def _context(self, origin: str) -> dict[str, Any]:
        context: dict[str, Any] = {"origin": origin, "pipeline": dict(self.pipeline, stage=dict(self.stage))}
        context["id"] = hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()
        return context

    def _progress(self) -> dict[str, Any]:
        progress: dict[str, Any] = {"name": "pipelines/sources", "total": self.pipelines_total,
                                    "done": max(self.pipelines_done, 0)}
        if self.pipeline["name"] is not None:
            progress["progress"] = {"name": f"pipeline: {self.pipeline['name']}", "total": self.stages_total,
                                    "done": self.stages_done}
        return progress

    def _emit(self, kind: str, origin: str, message: str | None = None, **fields: Any) -> None:
        record: dict[str, Any] = {"type": kind, "context": self._context(origin), "progress": self._progress()}
        if message is not None:
            record["message"] = message
        record.update(fields)
        record["timestamp"] = time.time()
        self.out.write(RS + json.dumps(record, sort_keys=True) + "\n")
        self.out.flush()

    def begin(self, total_stages: int, total_pipelines: int = 0) -> None:
        self.total = total_stages
        self.pipelines_total = total_pipelines
        self._emit("begin", self.ENGINE, f"Building {total_pipelines} pipelines, {total_stages} stages", stages=total_stages)

    def pipeline_start(self, name: str, object_id: str | None, stages: int) -> None:
        self.pipelines_done += 1
        self.pipeline = {"name": name, "id": object_id}
        self.stage = {"name": None, "id": None}
        self.stages_total, self.stages_done = stages, 0
        self._emit("pipeline-start", self.ENGINE, f"Starting pipeline {name}")

    def stage_start(self, index: int, pipeline: str, stage: str, object_id: str) -> None:
        self.stage = {"name": stage, "id": object_id}
        self._emit("stage-start", self.ENGINE, f"Starting module {stage}")

    def stage_output(self, line: str) -> None:
        self._emit("log", self.MODULE, line)

    def stage_end(self, index: int, pipeline: str, stage: str, object_id: str, status: str,
                  duration: float, changes: dict[str, Any] | None = None, output: str = "") -> None:
        self.stage = {"name": stage, "id": object_id}
        self.stages_done += 1
        self._emit("stage-end", self.ENGINE, f"Finished module {stage}", duration=round(duration, 3),
                   result={"name": stage, "id": object_id, "success": True, "output": output, "status": status,
                           "duration": round(duration, 3), "changes": changes})

    def stage_failed(self, pipeline: str, stage: str, object_id: str, returncode: int, tail: list[str]) -> None:
        self._emit("stage-end", self.ENGINE, f"Finished module {stage}",
                   result={"name": stage, "id": object_id, "success": False, "returncode": returncode,
                           "output": "\n".join(tail)})

    def sources_progress(self, done: int, total: int, bytes_done: int, bytes_total: int, rate: float) -> None:
        self._emit("sources", self.ENGINE, sources={"total": total, "done": done, "bytes_total": bytes_total,
                                                    "bytes_done": bytes_done, "rate": round(rate)})

    def log(self, message: str) -> None:
        self._emit("log", self.ENGINE, message)


MONITORS: dict[str, type[Monitor]] = {"log": LogMonitor, "jsonseq": JSONSeqMonitor, "quiet": QuietMonitor}
