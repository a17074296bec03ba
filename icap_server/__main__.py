from icap_server.admin.main import main

raise SystemExit(main())
