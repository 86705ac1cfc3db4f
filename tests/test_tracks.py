import numpy as np

from modeling_avis.tracks import AvisTrack, decode_mask, encode_mask


def test_rle_round_trip_keeps_every_pixel():
    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.6
    rle = encode_mask(mask)
    assert rle["size"] == [37, 53] and isinstance(rle["counts"], str)
    np.testing.assert_array_equal(decode_mask(rle), mask)


def test_track_areas_count_mask_pixels_per_frame():
    masks = np.zeros((3, 8, 10), dtype=bool)
    masks[0, :2, :3] = True
    masks[2] = True
    track = AvisTrack(1, 3, "cello", 0.9, [encode_mask(m) for m in masks])
    assert track.areas().tolist() == [6, 0, 80]
    np.testing.assert_array_equal(track.mask(0), masks[0])
