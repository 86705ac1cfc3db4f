"""What the page shows next to the video: a table of the instances and a timeline of when each one sounds."""

import numpy as np
from matplotlib.figure import Figure

from modeling_avis.tracks import AvisTrack, AvisVideoResult
from modeling_avis.visualization import track_colour

TABLE_HEADERS = ["id", "class", "score", "first second", "last second", "frames"]


def instance_table(result: AvisVideoResult) -> list[list]:
    """One row per instance: id, class, score, first and last second it sounds, sampled frames with a mask."""
    rows = []
    for track in result.tracks:
        sounding = np.flatnonzero(track.areas() > 0)
        first, last = (
            (round(float(result.timestamps[sounding[0]]), 2), round(float(result.timestamps[sounding[-1]]), 2))
            if len(sounding)
            else (None, None)
        )
        rows.append([track.track_id, track.label_name, round(float(track.score), 3), first, last, len(sounding)])
    return rows


def sounding_intervals(track: AvisTrack, timestamps: np.ndarray, end: float) -> list[tuple[float, float]]:
    """(start, length) of each sampled frame with a mask, each lasting until the next timestamp (the last until end)."""
    bounds = np.append(np.asarray(timestamps, dtype=float), end)
    return [(bounds[k], bounds[k + 1] - bounds[k]) for k in np.flatnonzero(track.areas() > 0)]


def timeline_figure(result: AvisVideoResult, end: float) -> Figure:
    """A bar per instance over time, in the instance's overlay colour, where it has a mask (it sounds)."""
    tracks = result.tracks
    figure = Figure(figsize=(8, 0.45 * max(len(tracks), 1) + 1.3), layout="constrained")
    axes = figure.add_subplot()
    for row, track in enumerate(tracks):
        colour = tuple(channel / 255 for channel in track_colour(track.track_id))
        intervals = sounding_intervals(track, result.timestamps, end)
        axes.broken_barh(intervals, (row - 0.35, 0.7), facecolors=colour, edgecolors="black", linewidth=0.5)
    axes.set_yticks(range(len(tracks)), [f"[{track.track_id}] {track.label_name}" for track in tracks])
    axes.set_ylim(len(tracks) - 0.5 if tracks else 0.5, -0.5)
    axes.set_xlim(0, end)
    axes.set_xlabel("seconds")
    axes.set_title("When each instance sounds", fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    if not tracks:
        axes.text(
            0.5, 0.5, "no sounding instance above the threshold", ha="center", va="center", transform=axes.transAxes
        )
    return figure
