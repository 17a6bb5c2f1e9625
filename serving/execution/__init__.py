"""From target to orders: rebalancer, guards, order planning, executor, state, brokers."""
