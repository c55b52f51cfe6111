"""srlm: Self-Rewarding Language Models (Yuan et al., 2024) as a production pipeline.

The library never imports Airflow: DAGs and operators are thin layers over it.
"""

__version__ = "0.1.0"
