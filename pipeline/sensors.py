"""`python -m pipeline.sensors`: the sensor registry command (pipeline/tools/sensors.py)."""
import sys

from .tools.sensors import main

if __name__ == "__main__":
    sys.exit(main())
