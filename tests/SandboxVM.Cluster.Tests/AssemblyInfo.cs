// Each class starts its own Redis and node processes: one at a time keeps a 2-core host from timing them out.
[assembly: CollectionBehavior(DisableTestParallelization = true)]
