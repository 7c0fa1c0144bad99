"""The censorship lab: an emulated Internet of network namespaces (grows in step 2)."""
