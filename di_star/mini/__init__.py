"""The mini world's build (`distar lab build mini`)."""
