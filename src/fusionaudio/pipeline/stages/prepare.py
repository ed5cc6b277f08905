"""``prepare``: probe the media, extract a 16 kHz mono WAV and (for videos) sampled frames.

Errors recorded per clip: file not found, not decodable, no audio track, silent clip (RMS below
``silence_db``), shorter than ``min_duration``; a clip with only a ``youtube_id`` is downloaded
first when ``download`` is on (yt-dlp, an optional extra), else it is an error.
"""

from __future__ import annotations

from pathlib import Path

from fusionaudio.pipeline import media
from fusionaudio.pipeline.stages.base import Item, Stage, StageError


def download(youtube_id: str, out_dir: Path, fmt: str, timeout: float) -> str:
    """Fetch a YouTube clip with yt-dlp (optional extra; off by default)."""
    try:
        import yt_dlp
    except ImportError:
        raise StageError("download is on but yt-dlp is not installed (pip install yt-dlp)") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = {"format": fmt, "outtmpl": str(out_dir / "download.%(ext)s"), "quiet": True, "noplaylist": True,
            "socket_timeout": timeout}
    try:
        with yt_dlp.YoutubeDL(opts) as ydl:
            info = ydl.extract_info(f"https://www.youtube.com/watch?v={youtube_id}", download=True)
            return ydl.prepare_filename(info)
    except Exception as e:  # noqa: BLE001 -- yt-dlp raises many types
        raise StageError(f"youtube_id {youtube_id}: download failed: {e}") from None


class PrepareStage(Stage):
    name = "prepare"
    DEFAULTS = {"sample_rate": 16000, "num_frames": 4, "frame_width": 336, "silence_db": -60.0,
                "min_duration": 0.1, "download": False, "download_format": "bv*[height<=360]+ba/b[height<=360]",
                "timeout_s": 300.0}

    @classmethod
    def check_environment(cls, name: str, section: dict) -> None:
        from fusionaudio.errors import RunError

        for tool in ("ffprobe", "ffmpeg"):
            try:
                media.find_tool(tool)
            except media.ToolMissing as e:
                raise RunError(f"stages.{name} needs {tool} to read the clips, and {e}") from None
        if section.get("download"):
            import importlib.util

            if importlib.util.find_spec("yt_dlp") is None:
                raise RunError(f"stages.{name}.download is on but yt-dlp is not installed (pip install yt-dlp)")

    def model_name(self) -> str:
        return "ffmpeg"

    def process(self, items: list[Item]) -> list:
        outs = []
        for item in items:
            try:
                outs.append(self._one(item))
            except (media.MediaError, StageError) as e:
                outs.append(e)
        return outs

    def _one(self, item: Item) -> dict:
        cfg, clip = self.cfg, item.clip
        path = clip.path
        if path is None:
            if not cfg["download"]:
                raise StageError(f"clip {clip.id} has only youtube_id={clip.youtube_id} and the downloader is off "
                                 "(stages.prepare.download: true)")
            path = download(clip.youtube_id, item.media_dir, cfg["download_format"], cfg["timeout_s"])
        info = media.probe(path, timeout=cfg["timeout_s"])
        if not info["has_audio"]:
            raise StageError(f"{path}: no audio track")
        wav = media.extract_audio(path, item.media_dir / "audio.wav", cfg["sample_rate"], clip.start, clip.end,
                                  timeout=cfg["timeout_s"])
        level = media.loudness(wav)
        if level["duration"] < cfg["min_duration"]:
            raise StageError(f"{path}: {level['duration']:.3f} s of audio (start={clip.start}, end={clip.end}); "
                             f"min_duration is {cfg['min_duration']} s")
        if level["rms_db"] < cfg["silence_db"]:
            raise StageError(f"{path}: silent clip (RMS {level['rms_db']:.1f} dBFS < silence_db {cfg['silence_db']})")
        frames = []
        if info["has_video"] and cfg["num_frames"] > 0:
            frames = media.extract_frames(path, item.media_dir / "frames", cfg["num_frames"], level["duration"],
                                          clip.start, cfg["frame_width"], timeout=cfg["timeout_s"])
        return {"audio": str(wav), "source": path, "duration": round(level["duration"], 3),
                "rms_db": round(level["rms_db"], 2), "has_video": info["has_video"], "frames": frames}
