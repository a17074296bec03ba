"""The filter service: route, identify, judge and answer one ICAP request; keep policy fresh; count usage."""
