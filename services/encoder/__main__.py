from services.encoder.cli import main

raise SystemExit(main())
