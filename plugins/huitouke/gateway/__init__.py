"""The gateway simulator (``huitouke gateway``): a real HTTP server speaking the webhook, Aliyun-
and Twilio-shaped SMS APIs with configurable faults, recording every message it accepts. For tests
and the demo over loopback, never production (docs/delivery.md, "Gateway simulator")."""
