"""Templated natural-language instructions and questions for the navigation tasks."""

from __future__ import annotations

import math
import string

import numpy as np

# Every character an instruction may contain: the `spaces.Text` charset.
CHARSET = string.ascii_letters + string.digits + " .,'-"
MAX_INSTRUCTION_CHARS = 320
ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def describe(obj) -> str:
    return f"{obj.colour} {obj.category}"


def turn_phrase(start_yaw: float, direction: np.ndarray) -> str:
    """How to turn from `start_yaw` to face `direction` (a 2D vector): R2R-style words."""
    target = math.atan2(direction[1], direction[0])
    delta = (target - start_yaw + math.pi) % (2 * math.pi) - math.pi
    if abs(delta) > math.radians(135):
        return "Turn around"
    if delta > math.radians(45):
        return "Turn left"
    if delta < -math.radians(45):
        return "Turn right"
    return "Go straight"


def vln_instruction(
    turn: str, rooms: list[str], landmarks: list[str | None], goal_desc: str, goal_room: str
) -> str:
    """`rooms` are the rooms along the path in order (start first, goal last); `landmarks[i]`
    an object passed in rooms[i] or None. Example: "Turn left, leave the bedroom, walk past
    the blue sofa in the hallway and stop next to the red chair in the kitchen."
    """
    parts = [turn]
    if len(rooms) > 1:
        parts.append(f"leave the {rooms[0]}")
    for room, mark in zip(rooms[1:-1], landmarks[1:-1]):
        parts.append(f"walk past the {mark} in the {room}" if mark else f"go through the {room}")
    text = ", ".join(parts) + f" and stop next to the {goal_desc} in the {goal_room}."
    return text[0].upper() + text[1:]


def tour_instruction() -> str:
    return "You are being shown around the house. Your actions are ignored until the question."


def ordinal_question(k: int) -> str:
    return f"Go to the object you were shown {ORDINALS[k]}."


def category_question(category: str) -> str:
    return f"Go back to the {category} you were shown."


def colour_question(colour: str) -> str:
    return f"Go back to the {colour} object you were shown."
