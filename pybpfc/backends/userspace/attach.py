"""Userspace attach calls (the LD_PRELOAD agent). Stub until the agent lands: attach calls
raise NotSupportedError from the Backend base class."""


class AttachMixin:
    pass
