"""Front ends over the medvit library (viewer, batch inference, fine-tuning CLI): no domain logic here."""
