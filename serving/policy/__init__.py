"""The pure hedge policy: its params (declared once), sizing, signals and costs."""
