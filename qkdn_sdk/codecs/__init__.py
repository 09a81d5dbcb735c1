"""Codecs: pure functions and sans-IO objects that turn messages into wire bytes and back."""
