from pipeline.demo.run import main

raise SystemExit(main())
