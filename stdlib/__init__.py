"""The standard library: distributions by name, targets with known answers, schedules, resamplers."""
