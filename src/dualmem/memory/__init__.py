"""The fast episodic memory and the slow semantic memory of the dual-memory learner."""
