"""What one trial computes: the program, interventions, optimizer and the pure step."""
