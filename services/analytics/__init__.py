"""Cloud analytics service: decodes TransTIC bitstreams and runs vision tasks on them."""
