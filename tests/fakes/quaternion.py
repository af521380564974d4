"""Test double of numpy-quaternion: only the (w, x, y, z) container the habitat backend uses."""


class quaternion:
    def __init__(self, w: float, x: float, y: float, z: float) -> None:
        self.w, self.x, self.y, self.z = w, x, y, z
