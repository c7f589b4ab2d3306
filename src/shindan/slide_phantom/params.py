"""Biological sizes, densities and shared constants of the phantom (µm unless stated)."""

# Biological sizes and densities (µm, per mm² of tissue).
TUBULE_SPACING_UM = 50.0
GLOM_RADIUS_UM = (75.0, 125.0)
GLOM_PER_MM2 = 2.2
ARTERY_RADIUS_UM = (40.0, 95.0)
ARTERY_PER_MM2 = 0.35
ARTERIOLE_RADIUS_UM = (10.0, 18.0)
ARTERIOLE_PER_MM2 = 1.5
CORE_HALF_WIDTH_UM = (380.0, 480.0)
LYMPHOCYTE_RADIUS_UM = (2.4, 3.2)
FIBROBLAST_AXES_UM = ((4.5, 7.0), (1.1, 1.6))
ROUND_UM = 9.0  # corner rounding of tubules squeezed into their Voronoi cells
GAP_MIN_UM = 0.8  # half the narrowest interstitial seam between two tubules
MAX_SCALE = 1.5  # tubule ellipse scale at no shrink (the Voronoi cell then bounds it)
KEY_EDGE = 11  # noise field keys (shared by renderer and calibration)
KEY_WOBBLE = 25
WOBBLE_UM = (9.0, 1.6)  # tubule outlines: irregularity scale and amplitude

# Nucleus id slots per structure (ids are base + index * slots + k).
SLOTS = {"tubule": 48, "glomerulus": 640, "vessel": 768}
