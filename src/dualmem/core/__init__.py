"""What every stage runs on, kept in one package so that each DVC stage depends on it as one directory:
params validation, paths, seeding and threads, the stage runner (cli), tracking, errors, integrity
checks, results and their statistics, the optimiser helper and learner discovery."""
