"""Pseudo-mask generators. Each is a pure function of (image or frames, features) -> masks;
``runner`` drives them over datasets. Never imports detectron2."""
