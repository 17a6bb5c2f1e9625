"""The backtest: the policy run over a panel, its report, plots and claims."""
