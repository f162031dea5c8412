"""Test 6's learners, one file each, discovered by file name (`dualmem.lm.text_learner.available`)."""
