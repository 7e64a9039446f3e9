"""Getting images: sources, downloads, archives, readers, and preparing them into arrays."""
