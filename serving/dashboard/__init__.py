"""``oihedge dashboard``: a read-only local web app over a live loop's files.

:func:`create_app` builds the FastAPI app from :class:`DashboardSettings`; the pages read
the state file read-only (:func:`oihedge.serving.live.status.read_status`) and the decision log
(:func:`oihedge.serving.live.decision_log.read_records`) and write neither. Plotly.js is served from
the ``plotly`` package's data, so the pages work offline.
"""

from oihedge.serving.dashboard.app import create_app
from oihedge.serving.dashboard.auth import TOKEN_ENV, is_loopback, strip_token
from oihedge.serving.dashboard.settings import DashboardSettings

__all__ = ["TOKEN_ENV", "DashboardSettings", "create_app", "is_loopback", "strip_token"]
