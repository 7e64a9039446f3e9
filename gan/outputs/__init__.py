"""What a trained generator produces for people: samples, pictures, exports."""
