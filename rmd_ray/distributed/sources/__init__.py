"""Sources planned into shards on the driver and read inside Ray tasks; seeded hold-out splits of them."""
