"""Pixel primitives shared by ingest, embed and search: opening slides and images, tissue detection,
tile grids, cutting regions, tile codecs, stain vectors, and a stored tile's pixels.

Nothing here knows about the store's tables; ingest and embed both build on these modules.
"""
