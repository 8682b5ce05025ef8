"""The words synthetic catalogs name things with: top categories and their nouns,
modifiers, product words, brands and title endings (:mod:`pipeline.synth`)."""

# Top categories and the nouns their subcategories are named after.
TOPS = (
    ("Computers & Accessories", ("Cables", "Keyboards", "Mice", "Monitors", "Drives")),
    ("Camera & Photo", ("Lenses", "Tripods", "Flashes", "Filters", "Camera Bags")),
    ("Car Electronics", ("Dash Cams", "Car Chargers", "Amplifiers", "Speakers", "Mounts")),
    ("Cell Phones & Accessories", ("Cases", "Screen Protectors", "Chargers", "Holsters")),
    ("Headphones", ("Earbuds", "Over-Ear Headphones", "Headsets", "Ear Pads")),
    ("Home Audio", ("Receivers", "Subwoofers", "Turntables", "Soundbars", "Speakers")),
    ("Portable Audio & Video", ("MP3 Players", "Radios", "Boomboxes", "Voice Recorders")),
    ("Television & Video", ("Televisions", "Projectors", "Antennas", "Streaming Players")),
    ("Video Games Accessories", ("Controllers", "Charging Docks", "Gaming Headsets")),
    ("GPS & Navigation", ("GPS Units", "Trackers", "Marine GPS", "Map Cards")),
    ("Office Electronics", ("Printers", "Scanners", "Calculators", "Label Makers")),
    ("Security & Surveillance", ("Cameras", "Doorbells", "Sensors", "Recorders")),
    ("Wearable Technology", ("Smartwatches", "Fitness Bands", "Smart Glasses", "Straps")),
    ("eBook Readers & Accessories", ("Covers", "Reading Lights", "Sleeves", "Stands")),
    ("Accessories & Supplies", ("Batteries", "Power Strips", "Adapters", "Cleaning Kits")),
    ("Home Theater", ("Remotes", "Wall Mounts", "Media Players", "Surround Systems")),
    ("Networking", ("Routers", "Switches", "Modems", "Range Extenders", "Network Cards")),
    ("Power & Batteries", ("Power Banks", "Solar Chargers", "Surge Protectors", "UPS")),
    ("Smart Home", ("Smart Plugs", "Smart Bulbs", "Thermostats", "Hubs")),
    ("Radio & Communication", ("Walkie Talkies", "Scanners", "CB Radios", "Ham Antennas")),
)
MODIFIERS = (
    "Wireless", "Portable", "Pro", "Compact", "Heavy Duty", "Premium", "Mini", "Digital",
    "Universal", "Rugged", "Slim", "Outdoor",
)  # fmt: skip
WORDS = (
    "Ultra", "Max", "Nano", "Turbo", "Classic", "Elite", "Prime", "Fusion", "Vivid", "Sonic",
    "Swift", "Titan", "Nova", "Pulse", "Echo", "Zen", "Apex", "Flex", "Aero", "Core",
    "Quantum", "Vertex", "Orbit", "Blaze", "Frost", "Stealth", "Lumen", "Matrix", "Summit",
    "Volt",
)  # fmt: skip
BRANDS = (
    "Sonix", "Voltix", "Anker", "Belkin", "Logitech", "Sony", "Panasonic", "AmazonBasics",
    "Kingston", "SanDisk", "Mpow", "Ugreen", "Aukey", "Cable Matters", "TP-Link", "Netgear",
    "JBL", "Philips", "Canon", "Nikon", "Garmin", "Vivitar", "Monoprice", "Rocketfish",
)  # fmt: skip
# Title endings: most titles have none; apostrophes make Python's repr pick double quotes.
FLOURISHES = (
    ("", 0.91),
    (", Kid's Edition", 0.01),
    (" (Men's)", 0.01),
    (" (Women's)", 0.01),
    (" - Don't Settle", 0.01),
    (", Editor's Choice", 0.01),
    (" Black &amp; White", 0.02),
    (" Charge &amp; Sync", 0.02),
)
