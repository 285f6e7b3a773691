"""What certification costs: prices per deployment, cost per test/run/job/day, budgets."""
