"""The domain core: pure Python, no I/O. Business rules live and are tested here.

Never import paho, sqlalchemy, sllurp or serial from this package.
"""
