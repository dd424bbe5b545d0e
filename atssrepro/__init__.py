"""atssrepro: reproduce the tables of the ATSS paper (CVPR 2020, arXiv 1912.02424)."""

__version__ = "0.1.0"
