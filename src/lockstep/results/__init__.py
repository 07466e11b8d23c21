"""The result store: every simulation's result kept on disk as it arrives, input-addressed
(``keys``, ``store``), read back as tables (``tables``) and by ``lockstep results``
(``commands``). Imports only ``lockstep.core``; pyarrow only in ``tables``."""
