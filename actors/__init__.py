"""Ray shard actors hosting virtual channel and member actors, the scheduler, and the client facade."""
